//! What a declared setting is, and the macro that declares one.

use super::Config;
use super::group::Group;
use super::values::Allowed;

/// One environment variable; see the module documentation.
pub struct Setting {
    /// The variable's name.
    pub name: &'static str,
    /// Its section.
    pub group: Group,
    /// Its default as documented (empty: unset).
    pub default: &'static str,
    /// What it does, in one or two sentences.
    pub help: &'static str,
    /// Its value is never printed (`metrocloud config` says only whether it is set).
    pub secret: bool,
    /// When unset, its value follows from the settings before it.
    pub(super) derived: Option<fn(&Config) -> String>,
    /// Reads the text into the configuration, or says what is allowed.
    pub(super) apply: fn(&mut Config, &str) -> Result<(), Allowed>,
    /// Writes the value as the variable would hold it.
    pub(super) show: fn(&Config) -> String,
}

/// Declares one setting: name, group, default, help, the field it sets,
/// the parser of its text (`|v| ...`) and the printer of its value.
macro_rules! setting {
    ($name:literal, $group:ident, $default:literal, $help:literal,
     $($field:ident).+, |$v:ident| $parse:expr, $show:expr $(, $key:ident: $value:expr)* $(,)?) => {
        Setting {
            name: $name,
            group: Group::$group,
            default: $default,
            help: $help,
            apply: |config, $v| {
                config.$($field).+ = $parse?;
                Ok(())
            },
            show: |config| $show(&config.$($field).+),
            $($key: $value,)*
            ..Setting::PLAIN
        }
    };
}

impl Setting {
    /// What a declaration has unless it says otherwise.
    pub(super) const PLAIN: Setting = Setting {
        name: "",
        group: Group::Kafka,
        default: "",
        help: "",
        secret: false,
        derived: None,
        apply: |_, _| Ok(()),
        show: |_| String::new(),
    };
}
