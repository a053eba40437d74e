//! What every config type's `validate()` answers: which setting is wrong,
//! its value, and the rule it breaks.

/// A setting outside what the node accepts.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
#[error("{name} = {value} is invalid: {rule}")]
pub struct InvalidSetting {
    /// The setting's name (as its flag spells it, without dashes).
    pub name: &'static str,
    /// The value given.
    pub value: String,
    /// What it must be.
    pub rule: String,
}

/// `Ok` if `value` lies in `range`, else the [`InvalidSetting`] saying so.
pub fn check_range<T>(
    name: &'static str,
    value: T,
    range: std::ops::RangeInclusive<T>,
) -> Result<(), InvalidSetting>
where
    T: PartialOrd + std::fmt::Display,
{
    if range.contains(&value) {
        return Ok(());
    }
    Err(InvalidSetting {
        name,
        value: value.to_string(),
        rule: format!("must be from {} to {}", range.start(), range.end()),
    })
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_value_out_of_range_names_the_setting_and_the_bounds() {
        assert!(check_range("x", 5, 1..=10).is_ok());
        let e = check_range("broker-lease-ms", 100u64, 500..=60_000).unwrap_err();
        assert_eq!(
            e.to_string(),
            "broker-lease-ms = 100 is invalid: must be from 500 to 60000"
        );
    }
}
