//! `named_enum!`: declares a fieldless enum together with the list of its
//! variants (`ALL`), their names (`as_str`) and their position (`index`), so
//! that code which counts or lists per variant (metrics, status pages) never
//! re-lists them: a new variant shows up everywhere, under its own name.

/// Declares `enum Name { Variant = "name", ... }` (attributes allowed on the
/// enum and on each variant) and generates:
/// - `Name::ALL`: every variant, in declaration order;
/// - `as_str(self)`: the variant's name;
/// - `index(self)`: its position in `ALL` (its discriminant).
///
/// ```
/// sonde::named_enum! {
///     #[derive(Debug, Clone, Copy, PartialEq)]
///     pub enum Light { Red = "red", Green = "green" }
/// }
/// assert_eq!(Light::ALL, [Light::Red, Light::Green]);
/// assert_eq!(Light::Green.as_str(), "green");
/// assert_eq!(Light::Green.index(), 1);
/// ```
#[macro_export]
macro_rules! named_enum {
    (
        $(#[$meta:meta])*
        $vis:vis enum $name:ident {
            $( $(#[$vmeta:meta])* $variant:ident = $text:literal ),+ $(,)?
        }
    ) => {
        $(#[$meta])*
        $vis enum $name {
            $( $(#[$vmeta])* $variant, )+
        }

        impl $name {
            /// Every variant, in declaration order.
            pub const ALL: [$name; [$( stringify!($variant) ),+].len()] = [$( $name::$variant ),+];

            /// The variant's name, as in config, JSON and metric labels.
            pub fn as_str(self) -> &'static str {
                match self {
                    $( $name::$variant => $text, )+
                }
            }

            /// The variant's position in `ALL`.
            pub fn index(self) -> usize {
                self as usize
            }
        }
    };
}
