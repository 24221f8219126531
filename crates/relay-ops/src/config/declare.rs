//! How a key is declared. [`config_keys!`] takes one declaration per key (its doc comment, field,
//! name, value type, default and sample) grouped in sections, and generates from it everything
//! that used to be written three times: the raw struct the file and environment fill, its
//! defaults, the setter that converts one value, the names the rules between keys refer to, and
//! the documentation table ([`SECTIONS`](super::SECTIONS)) from which the sample config file,
//! docs/configuration.md's table and relay-sync.conf(5) are rendered. rust-analyzer's
//! `config_data!` is the model.

/// A group of keys: a heading of the sample config file and of the man page.
#[derive(Debug, Clone, Copy)]
pub struct Section {
    /// The heading.
    pub title: &'static str,
    /// What the documentation says before the keys (the section's doc comment), or nothing.
    pub note: &'static str,
    /// The keys, in the order the file lists them.
    pub keys: &'static [Key],
}

/// One key as the documentation shows it.
#[derive(Debug, Clone, Copy)]
pub struct Key {
    /// The name in the file; `RELAY_SYNC_<name>` in the environment.
    pub name: &'static str,
    /// The default.
    pub default: Shown,
    /// What the key is for: its doc comment, one line of text per line of comment.
    pub about: &'static str,
    /// Whether the value is a secret: an error never shows it.
    pub secret: bool,
    /// What the sample config file shows besides the default.
    pub sample: Option<Sample>,
}

/// A key's default as the documentation shows it.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Shown {
    /// None: the key must be set.
    Required,
    /// This value, read by the key's own parser.
    Value(&'static str),
    /// Derived from other keys or from the system, as described.
    Derived(&'static str),
    /// Not set: the feature is off, or the list is empty.
    Unset,
}

/// A value the sample config file shows for a key.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Sample {
    /// Set as shipped: a path the packages lay out, the same on every gateway.
    Shipped(&'static str),
    /// Commented out: what a gateway's own value looks like.
    Example(&'static str),
}

impl Key {
    /// A key as the macro declares it; the modifiers below add the rest.
    pub(super) const fn new(name: &'static str, default: Shown, about: &'static str) -> Key {
        Key {
            name,
            default,
            about,
            secret: false,
            sample: None,
        }
    }

    /// The value is a secret: errors never show it.
    pub(super) const fn secret(self) -> Key {
        Key {
            secret: true,
            ..self
        }
    }

    /// The sample config file shows `value`, commented out, as an example.
    pub(super) const fn example(self, value: &'static str) -> Key {
        Key {
            sample: Some(Sample::Example(value)),
            ..self
        }
    }

    /// The sample config file sets `value`.
    pub(super) const fn shipped(self, value: &'static str) -> Key {
        Key {
            sample: Some(Sample::Shipped(value)),
            ..self
        }
    }

    /// The key's description as one line of text.
    pub fn about_line(&self) -> String {
        self.about.split_whitespace().collect::<Vec<_>>().join(" ")
    }
}

/// Whether `name` is `field` in upper case: the field and the key are one name.
pub(super) const fn is_field_name(name: &str, field: &str) -> bool {
    let (name, field) = (name.as_bytes(), field.as_bytes());
    if name.len() != field.len() {
        return false;
    }
    let mut at = 0;
    while at < name.len() {
        if name[at] != field[at].to_ascii_uppercase() {
            return false;
        }
        at += 1;
    }
    true
}

/// The value of a default, read by the key's own parser. A default the parser refuses is a
/// mistake in the declaration, found by every test that loads a configuration.
pub(super) fn parse_default<T: super::values::ValueType>(name: &str, text: &str) -> T::Value {
    T::parse(text).unwrap_or_else(|expected| {
        panic!("the default {text:?} of {name} is not {expected}: fix its declaration")
    })
}

/// Declares every key. Each section is
///
/// ```text
/// /// What the documentation says before the section's keys.
/// section "Title" {
///     /// What the key is for.
///     field "FIELD": ValueType = DEFAULT MODIFIERS,
/// }
/// ```
///
/// - `field` is the key's field of the raw struct, and `"FIELD"` its name: the name must be the
///   field in upper case (checked when compiling).
/// - `ValueType` implements [`ValueType`](super::values::ValueType): what the value is, and what
///   an error says the key expected.
/// - `DEFAULT` is `default("TEXT")` (the text, read by the key's parser; the field is the value),
///   `required`, `derived("WHAT")` (computed from other keys as described) or `unset`; with the
///   last three the field is an `Option`.
/// - `MODIFIERS` are [`Key`]'s: `.secret()`, `.example("VALUE")`, `.shipped("VALUE")`.
macro_rules! config_keys {
    (
        $(
            $(#[doc = $note:literal])*
            section $title:literal {
                $(
                    $(#[doc = $about:literal])*
                    $field:ident $name:literal : $ty:ty =
                        $kind:ident $(($default:literal))? $(. $modifier:ident ($($argument:literal)?))*,
                )*
            }
        )*
    ) => {
        /// Every key, grouped as the sample config file shows them.
        pub const SECTIONS: &[Section] = &[$(
            Section {
                title: $title,
                note: concat!($($note, "\n"),*),
                keys: &[$(
                    Key::new(
                        $name,
                        config_keys!(@shown $kind $(($default))?),
                        concat!($($about, "\n"),*),
                    ) $(.$modifier($($argument)?))*
                ),*],
            }
        ),*];

        /// The values read, one field per key: the value, or an `Option` of it for a key that
        /// has no default of its own.
        pub(super) struct Raw {
            $($(pub(super) $field: config_keys!(@type $kind, $ty),)*)*
        }

        impl Default for Raw {
            /// Every key at its default.
            fn default() -> Raw {
                Raw {
                    $($($field: config_keys!(@default $kind $(($default))?, $ty, $name),)*)*
                }
            }
        }

        impl Raw {
            /// Reads `text` into the field of the key `name`, or says what the key expects.
            /// A name that is no key changes nothing.
            pub(super) fn set(&mut self, name: &str, text: &str) -> Result<(), String> {
                match name {
                    $($($name => {
                        let value = <$ty as ValueType>::parse(text)?;
                        self.$field = config_keys!(@wrap $kind, value);
                    })*)*
                    _ => {}
                }
                Ok(())
            }
        }

        /// Each key's name, by field: what the rules between keys name in their errors.
        #[allow(dead_code, reason = "only the keys a rule or a check names are read")]
        pub(crate) struct Names {
            $($(pub(crate) $field: &'static str,)*)*
        }

        /// The names, so that a rule writes `NAME.db_host`, checked when compiling, rather than
        /// spell a key's name a second time.
        pub(crate) const NAME: Names = Names {
            $($($field: $name,)*)*
        };

        $($(const _: () = assert!(
            is_field_name($name, stringify!($field)),
            concat!("the key ", $name, " must be its field's name in upper case"),
        );)*)*
    };

    (@shown default($text:literal)) => { Shown::Value($text) };
    (@shown required) => { Shown::Required };
    (@shown derived($text:literal)) => { Shown::Derived($text) };
    (@shown unset) => { Shown::Unset };

    (@type default, $ty:ty) => { <$ty as ValueType>::Value };
    (@type $kind:ident, $ty:ty) => { Option<<$ty as ValueType>::Value> };

    (@default default($text:literal), $ty:ty, $name:literal) => { parse_default::<$ty>($name, $text) };
    (@default $kind:ident $(($text:literal))?, $ty:ty, $name:literal) => { None };

    (@wrap default, $value:ident) => { $value };
    (@wrap $kind:ident, $value:ident) => { Some($value) };
}

pub(super) use config_keys;
