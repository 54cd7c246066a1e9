//! Named counters: enums whose variants are counted, each under a stable
//! name.
//!
//! A drop reason (the parser's, the engine's, the router's, the
//! dataplane's) is declared once, as a variant of an enum made by
//! [`named_counters!`](crate::named_counters), and that one declaration
//! gives everything that counts it (see [`ParseError`](crate::ParseError)):
//! a dense `index` into a counter array of `COUNT` slots, the list `ALL` in
//! index order, and a snake_case `name` that the stats file, the metrics
//! and the tests print and compare. The names are an external interface: change one only
//! with everything that reads it. Variants carry no data, so the list is
//! finite and a reason never holds packet content.
//!
//! The macro lives here, in the lowest crate, so that every crate that
//! counts uses the same one; it checks at compile time that every name is
//! snake_case and that no two are the same.

/// Declares a field-less enum of named counters.
///
/// ```
/// wire::named_counters! {
///     /// Why a frame was refused.
///     pub enum Refusal {
///         /// Too short for its header.
///         Short => "short",
///         /// A name, and a text for people ([`core::fmt::Display`]).
///         BadChecksum => "bad_checksum" ("checksum mismatch"),
///     }
/// }
/// assert_eq!(Refusal::COUNT, 2);
/// assert_eq!(Refusal::BadChecksum.index(), 1);
/// assert_eq!(Refusal::ALL[1].name(), "bad_checksum");
/// assert_eq!(Refusal::Short.to_string(), "short");
/// assert_eq!(Refusal::BadChecksum.to_string(), "checksum mismatch");
/// ```
///
/// The enum derives `Clone, Copy, Debug, PartialEq, Eq, Hash, PartialOrd,
/// Ord` and gets `ALL`, `COUNT`, `name()`, `index()` and `Display` (the
/// variant's text if it has one, else its name).
///
/// Two variants with one name do not build:
///
/// ```compile_fail
/// wire::named_counters! {
///     enum Twice {
///         A => "same",
///         B => "same",
///     }
/// }
/// ```
#[macro_export]
macro_rules! named_counters {
    (@text $name:literal) => { $name };
    (@text $name:literal $text:literal) => { $text };
    (
        $(#[$meta:meta])*
        $vis:vis enum $ty:ident {
            $( $(#[$doc:meta])* $variant:ident => $name:literal $(($text:literal))?, )*
        }
    ) => {
        $(#[$meta])*
        #[derive(Clone, Copy, Debug, PartialEq, Eq, Hash, PartialOrd, Ord)]
        $vis enum $ty {
            $( $(#[$doc])* $variant, )*
        }

        impl $ty {
            /// Every variant, in [`index`](Self::index) order.
            pub const ALL: &'static [$ty] = &[$($ty::$variant,)*];
            /// The number of variants: the length of a counter array.
            pub const COUNT: usize = Self::ALL.len();

            /// The stable snake_case name: the counter's name.
            pub const fn name(&self) -> &'static str {
                match self {
                    $( $ty::$variant => $name, )*
                }
            }

            /// The position in [`ALL`](Self::ALL): the counter array's slot.
            #[inline]
            pub const fn index(self) -> usize {
                self as usize
            }
        }

        const _: () = $crate::named::check_names(&[$($name,)*]);

        impl ::core::fmt::Display for $ty {
            fn fmt(&self, f: &mut ::core::fmt::Formatter<'_>) -> ::core::fmt::Result {
                f.write_str(match self {
                    $( $ty::$variant => $crate::named_counters!(@text $name $($text)?), )*
                })
            }
        }
    };
}

/// Fails the build (the macro calls it in a constant) if a name is not
/// snake_case (`[a-z0-9_]`, starting with a letter) or appears twice.
#[doc(hidden)]
pub const fn check_names(names: &[&str]) {
    let mut i = 0;
    while i < names.len() {
        let n = names[i].as_bytes();
        assert!(!n.is_empty() && n[0].is_ascii_lowercase(), "a counter name starts with a lowercase letter");
        let mut k = 0;
        while k < n.len() {
            let b = n[k];
            assert!(b.is_ascii_lowercase() || b.is_ascii_digit() || b == b'_', "a counter name is snake_case");
            k += 1;
        }
        let mut j = 0;
        while j < i {
            assert!(!same(names[j].as_bytes(), n), "two counters have the same name");
            j += 1;
        }
        i += 1;
    }
}

const fn same(a: &[u8], b: &[u8]) -> bool {
    if a.len() != b.len() {
        return false;
    }
    let mut i = 0;
    while i < a.len() {
        if a[i] != b[i] {
            return false;
        }
        i += 1;
    }
    true
}

#[cfg(test)]
mod tests {
    use super::*;

    crate::named_counters! {
        enum Sample {
            Alpha => "alpha",
            BetaTwo => "beta_two" ("beta, the second"),
            Gamma3 => "gamma_3",
        }
    }

    #[test]
    fn a_declaration_gives_dense_indexes_names_and_texts() {
        assert_eq!(Sample::COUNT, 3);
        for (i, s) in Sample::ALL.iter().enumerate() {
            assert_eq!(s.index(), i);
        }
        let names: [&str; 3] = [Sample::Alpha.name(), Sample::BetaTwo.name(), Sample::Gamma3.name()];
        assert_eq!(names, ["alpha", "beta_two", "gamma_3"]);
        #[cfg(feature = "std")]
        {
            assert_eq!(std::format!("{}", Sample::Alpha), "alpha");
            assert_eq!(std::format!("{}", Sample::BetaTwo), "beta, the second");
        }
    }

    #[test]
    fn names_must_be_snake_case_and_distinct() {
        check_names(&["a", "b_2", "c"]);
        for bad in [&["Upper"][..], &["with space"], &["_lead"], &[""], &["same", "other", "same"]] {
            #[cfg(feature = "std")]
            assert!(std::panic::catch_unwind(|| check_names(bad)).is_err(), "{bad:?}");
            #[cfg(not(feature = "std"))]
            let _ = bad;
        }
    }
}
