//! TLS flags shared by every subcommand, and `rivulet cert`, which makes a
//! development CA and certificates so nobody needs openssl to try TLS.

use std::net::IpAddr;
use std::path::{Path, PathBuf};
use std::sync::RwLock;

use anyhow::{bail, Context, Result};
use clap::Args;
use rivulet_proto::tls::{ClientTls, NodeTls};
use rivulet_proto::user_auth::UserCredentials;

/// `--tls-ca`, `--tls-cert`, `--tls-key`: on `rivulet node` the node's
/// own certificate and the CA its peers' are signed by; on the client
/// tools the CA to trust and an optional client certificate.
#[derive(Debug, Clone, Args)]
pub struct TlsArgs {
    /// PEM file of the CA to trust: clients refuse a node whose certificate
    /// it did not sign, and so do nodes calling each other. Turns TLS on.
    #[arg(long, global = true, env = "RIVULET_TLS_CA", value_name = "PEM")]
    pub tls_ca: Option<PathBuf>,
    /// PEM file of this process's certificate (a node's: required with TLS;
    /// a client's: optional).
    #[arg(long, global = true, env = "RIVULET_TLS_CERT", value_name = "PEM")]
    pub tls_cert: Option<PathBuf>,
    /// PEM file of the certificate's private key.
    #[arg(long, global = true, env = "RIVULET_TLS_KEY", value_name = "PEM")]
    pub tls_key: Option<PathBuf>,
}

/// `--user`, `--password-file`, `--allow-plaintext-password`: who the
/// client tools call as. The password comes from `RIVULET_PASSWORD` or the
/// file, never from the command line (where `ps` shows it).
#[derive(Debug, Clone, Args)]
pub struct UserArgs {
    /// Call as this user (its password from RIVULET_PASSWORD or
    /// --password-file). Needed on clusters started with --require-auth.
    #[arg(long, global = true, env = "RIVULET_USER", value_name = "NAME")]
    pub user: Option<String>,
    /// A file whose first line is the user's password.
    #[arg(
        long,
        global = true,
        env = "RIVULET_PASSWORD_FILE",
        value_name = "FILE"
    )]
    pub password_file: Option<PathBuf>,
    /// Send the password even over a plaintext connection (without
    /// --tls-ca); it then crosses the network readable.
    #[arg(long, global = true, env = "RIVULET_ALLOW_PLAINTEXT_PASSWORD")]
    pub allow_plaintext_password: bool,
}

/// The client tools' user.
static CLIENT_USER: RwLock<(Option<UserCredentials>, bool)> = RwLock::new((None, false));

/// Reads the client tools' user, at start.
pub fn init_user(args: &UserArgs) -> Result<()> {
    let Some(user) = &args.user else {
        if args.password_file.is_some() {
            bail!("--password-file needs --user");
        }
        return Ok(());
    };
    let password = match &args.password_file {
        Some(f) => std::fs::read_to_string(f)
            .with_context(|| format!("cannot read --password-file {}", f.display()))?
            .lines()
            .next()
            .unwrap_or_default()
            .to_owned(),
        None => std::env::var("RIVULET_PASSWORD").map_err(|_| {
            anyhow::anyhow!(
                "--user {user}: give the password in RIVULET_PASSWORD or --password-file"
            )
        })?,
    };
    set_user(
        Some(UserCredentials::new(user, password)),
        args.allow_plaintext_password,
    );
    Ok(())
}

/// Makes the client tools call as `user`.
pub fn set_user(user: Option<UserCredentials>, allow_plaintext: bool) {
    *CLIENT_USER.write().unwrap_or_else(|e| e.into_inner()) = (user, allow_plaintext);
}

/// The client tools' user and whether it may go over plaintext.
pub fn user() -> (Option<UserCredentials>, bool) {
    CLIENT_USER
        .read()
        .unwrap_or_else(|e| e.into_inner())
        .clone()
}

/// The client tools' TLS: from the flags, or the local cluster's own.
static CLIENT_TLS: RwLock<Option<ClientTls>> = RwLock::new(None);

/// Reads the client tools' TLS settings, at start.
pub fn init_client(args: &TlsArgs) -> Result<()> {
    let tls = ClientTls::from_flags(
        args.tls_ca.as_deref(),
        args.tls_cert.as_deref(),
        args.tls_key.as_deref(),
    )?;
    set_client(tls);
    Ok(())
}

/// Makes the client tools use `tls` (a local cluster started with TLS).
pub fn set_client(tls: Option<ClientTls>) {
    *CLIENT_TLS.write().unwrap_or_else(|e| e.into_inner()) = tls;
}

/// The client tools' TLS, if `--tls-ca` was given.
pub fn client() -> Option<ClientTls> {
    CLIENT_TLS.read().unwrap_or_else(|e| e.into_inner()).clone()
}

/// Client settings for `bootstrap`, with the process's TLS.
pub fn client_config(bootstrap: &str) -> rivulet_client::ClientConfig {
    let (user, plaintext) = user();
    rivulet_client::ClientConfig::new(bootstrap)
        .with_tls(client())
        .with_user(user)
        .with_plaintext_password(plaintext)
}

/// A node's TLS: all three files, or none.
pub fn node(args: &TlsArgs) -> Result<Option<NodeTls>> {
    match (&args.tls_cert, &args.tls_key, &args.tls_ca) {
        (None, None, None) => Ok(None),
        (Some(cert), Some(key), Some(ca)) => Ok(Some(NodeTls::from_files(cert, key, ca)?)),
        _ => bail!("a node's TLS needs all of --tls-cert, --tls-key and --tls-ca"),
    }
}

/// Options of `rivulet cert`.
#[derive(Debug, Args)]
pub struct CertArgs {
    /// Directory to write into (it must not hold a CA yet): `ca.pem` and
    /// `ca.key`, `node.pem`/`node.key` (for every node, naming every
    /// `--host`) and `client.pem`/`client.key` (a client certificate).
    #[arg(long, value_name = "DIR")]
    pub out_dir: PathBuf,
    /// A name or IP address the nodes are reached at (repeatable); the
    /// node certificate is valid for each.
    #[arg(long = "host", value_name = "NAME|IP", default_values_t = ["127.0.0.1".to_string(), "localhost".to_string()])]
    pub hosts: Vec<String>,
    /// Days the certificates stay valid.
    #[arg(long, default_value_t = 825)]
    pub days: u32,
    /// Succeed without writing anything if the directory already holds a
    /// CA (for a compose file's one-shot certificate step).
    #[arg(long)]
    pub if_missing: bool,
}

/// The files `rivulet cert` writes.
#[derive(Debug, Clone)]
pub struct CertFiles {
    /// The CA's certificate.
    pub ca: PathBuf,
    /// The node certificate and key.
    pub node_cert: PathBuf,
    /// See `node_cert`.
    pub node_key: PathBuf,
    /// The client certificate and key.
    pub client_cert: PathBuf,
    /// See `client_cert`.
    pub client_key: PathBuf,
}

impl CertFiles {
    /// The files in `dir`.
    pub fn in_dir(dir: &Path) -> Self {
        Self {
            ca: dir.join("ca.pem"),
            node_cert: dir.join("node.pem"),
            node_key: dir.join("node.key"),
            client_cert: dir.join("client.pem"),
            client_key: dir.join("client.key"),
        }
    }

    /// The `rivulet node` flags that serve with these files.
    pub fn node_flags(&self) -> Vec<String> {
        vec![
            "--tls-ca".into(),
            self.ca.display().to_string(),
            "--tls-cert".into(),
            self.node_cert.display().to_string(),
            "--tls-key".into(),
            self.node_key.display().to_string(),
        ]
    }
}

/// Runs `rivulet cert`.
pub fn run_cert(args: &CertArgs) -> Result<()> {
    if args.if_missing && CertFiles::in_dir(&args.out_dir).ca.exists() {
        println!(
            "{} already holds a CA; left as it is",
            args.out_dir.display()
        );
        return Ok(());
    }
    let files = make_certs(&args.out_dir, &args.hosts, args.days)?;
    println!(
        "wrote a development CA and certificates to {}:",
        args.out_dir.display()
    );
    println!(
        "  CA:     {} (trust it: --tls-ca / RIVULET_TLS_CA)",
        files.ca.display()
    );
    println!(
        "  node:   {} {} (valid for {})",
        files.node_cert.display(),
        files.node_key.display(),
        args.hosts.join(", ")
    );
    println!(
        "  client: {} {}",
        files.client_cert.display(),
        files.client_key.display()
    );
    println!(
        "start each node with --tls-ca {} --tls-cert {} --tls-key {}",
        files.ca.display(),
        files.node_cert.display(),
        files.node_key.display()
    );
    Ok(())
}

/// Makes a CA in `dir` and node and client certificates signed by it.
/// Keys are written mode 0600.
pub fn make_certs(dir: &Path, hosts: &[String], days: u32) -> Result<CertFiles> {
    use rcgen::{
        BasicConstraints, CertificateParams, DnType, ExtendedKeyUsagePurpose, IsCa, KeyPair,
        KeyUsagePurpose,
    };
    if hosts.is_empty() {
        bail!("give at least one --host");
    }
    if !(1..=3650).contains(&days) {
        bail!("--days must be 1 to 3650, not {days}");
    }
    for h in hosts {
        let dns_ok = !h.is_empty()
            && h.len() <= 253
            && h.bytes()
                .all(|b| b.is_ascii_alphanumeric() || b == b'-' || b == b'.');
        if h.parse::<IpAddr>().is_err() && !dns_ok {
            bail!("--host {h:?} is neither an IP address nor a DNS name");
        }
    }
    std::fs::create_dir_all(dir).with_context(|| format!("cannot create {}", dir.display()))?;
    let files = CertFiles::in_dir(dir);
    let ca_key_path = dir.join("ca.key");
    let now = std::time::SystemTime::now();
    let until = now + std::time::Duration::from_secs(u64::from(days) * 86_400);
    let validity = |p: &mut CertificateParams| {
        p.not_before = now.into();
        p.not_after = until.into();
    };
    let mut ca_params = CertificateParams::new(Vec::<String>::new())?;
    ca_params.is_ca = IsCa::Ca(BasicConstraints::Unconstrained);
    ca_params
        .distinguished_name
        .push(DnType::CommonName, "Rivulet development CA");
    ca_params.key_usages = vec![
        KeyUsagePurpose::KeyCertSign,
        KeyUsagePurpose::CrlSign,
        KeyUsagePurpose::DigitalSignature,
    ];
    let all = [
        &files.ca,
        &ca_key_path,
        &files.node_cert,
        &files.node_key,
        &files.client_cert,
        &files.client_key,
    ];
    if let Some(existing) = all.iter().find(|f| f.exists()) {
        bail!(
            "{} exists; remove the old files or choose another --out-dir (certificates \
             signed by a new CA would not be trusted by nodes using the old one)",
            existing.display()
        );
    }
    validity(&mut ca_params);
    let ca_key = KeyPair::generate()?;
    let ca_cert = ca_params.self_signed(&ca_key)?;
    write_private(&ca_key_path, &ca_key.serialize_pem())?;

    // The extra name marks the certificate as a node's: a peer presenting
    // it over mutual TLS is a node (rivulet_proto::node_auth), the proof
    // nodes without a cluster secret give.
    let mut names = hosts.to_vec();
    names.push(rivulet_proto::node_auth::NODE_CERT_NAME.to_owned());
    let mut node = CertificateParams::new(names)?;
    node.distinguished_name
        .push(DnType::CommonName, "rivulet node");
    node.extended_key_usages = vec![
        ExtendedKeyUsagePurpose::ServerAuth,
        ExtendedKeyUsagePurpose::ClientAuth,
    ];
    validity(&mut node);
    let node_key = KeyPair::generate()?;
    let node_cert = node.signed_by(&node_key, &ca_cert, &ca_key)?;
    std::fs::write(&files.node_cert, node_cert.pem())?;
    write_private(&files.node_key, &node_key.serialize_pem())?;

    let mut client = CertificateParams::new(Vec::<String>::new())?;
    client
        .distinguished_name
        .push(DnType::CommonName, "rivulet client");
    client.extended_key_usages = vec![ExtendedKeyUsagePurpose::ClientAuth];
    validity(&mut client);
    let client_key = KeyPair::generate()?;
    let client_cert = client.signed_by(&client_key, &ca_cert, &ca_key)?;
    std::fs::write(&files.client_cert, client_cert.pem())?;
    write_private(&files.client_key, &client_key.serialize_pem())?;
    // Last: a CA certificate means the directory is complete.
    std::fs::write(&files.ca, ca_cert.pem())?;
    Ok(files)
}

fn write_private(path: &Path, pem: &str) -> Result<()> {
    use std::io::Write;
    let mut options = std::fs::OpenOptions::new();
    // Never an existing file (it could be world-readable, or a symlink).
    options.write(true).create_new(true);
    #[cfg(unix)]
    {
        use std::os::unix::fs::OpenOptionsExt;
        options.mode(0o600);
    }
    let mut f = options
        .open(path)
        .with_context(|| format!("cannot write {}", path.display()))?;
    f.write_all(pem.as_bytes())?;
    Ok(())
}
