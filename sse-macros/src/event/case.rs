//! `rename_all`, with the cases and spellings serde uses.

/// A case a variant name can be written in.
#[derive(Clone, Copy)]
pub enum Case {
    Lower,
    Upper,
    Pascal,
    Camel,
    Snake,
    ScreamingSnake,
    Kebab,
    ScreamingKebab,
}

/// Every spelling `rename_all` accepts, as serde spells it, and its case.
const CASES: [(&str, Case); 8] = [
    ("lowercase", Case::Lower),
    ("UPPERCASE", Case::Upper),
    ("PascalCase", Case::Pascal),
    ("camelCase", Case::Camel),
    ("snake_case", Case::Snake),
    ("SCREAMING_SNAKE_CASE", Case::ScreamingSnake),
    ("kebab-case", Case::Kebab),
    ("SCREAMING-KEBAB-CASE", Case::ScreamingKebab),
];

/// Every spelling `rename_all` accepts, quoted, for the error that lists them.
pub fn spellings() -> String {
    CASES
        .iter()
        .map(|(spelling, _)| format!("{spelling:?}"))
        .collect::<Vec<_>>()
        .join(", ")
}

impl Case {
    pub fn from_spelling(spelling: &str) -> Option<Case> {
        CASES
            .iter()
            .find(|(name, _)| *name == spelling)
            .map(|(_, case)| *case)
    }

    /// A variant name (written in PascalCase, as Rust variants are) in this
    /// case, as serde renames variants.
    pub fn apply(self, variant: &str) -> String {
        match self {
            Case::Pascal => variant.to_owned(),
            Case::Lower => variant.to_ascii_lowercase(),
            Case::Upper => variant.to_ascii_uppercase(),
            Case::Camel => {
                let mut chars = variant.chars();
                chars.next().map_or_else(String::new, |first| {
                    first.to_ascii_lowercase().to_string() + chars.as_str()
                })
            }
            Case::Snake => snake(variant),
            Case::ScreamingSnake => snake(variant).to_ascii_uppercase(),
            Case::Kebab => snake(variant).replace('_', "-"),
            Case::ScreamingKebab => snake(variant).replace('_', "-").to_ascii_uppercase(),
        }
    }
}

/// `UserJoined` → `user_joined`: an underscore before every uppercase letter
/// but the first, as serde does.
fn snake(variant: &str) -> String {
    let mut out = String::with_capacity(variant.len() + 4);
    for (index, ch) in variant.char_indices() {
        if index > 0 && ch.is_uppercase() {
            out.push('_');
        }
        out.push(ch.to_ascii_lowercase());
    }
    out
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn every_case_renames_as_serde_does() {
        let cases = [
            ("lowercase", "userjoined"),
            ("UPPERCASE", "USERJOINED"),
            ("PascalCase", "UserJoined"),
            ("camelCase", "userJoined"),
            ("snake_case", "user_joined"),
            ("SCREAMING_SNAKE_CASE", "USER_JOINED"),
            ("kebab-case", "user-joined"),
            ("SCREAMING-KEBAB-CASE", "USER-JOINED"),
        ];
        for (spelling, expected) in cases {
            let case = Case::from_spelling(spelling).unwrap();
            assert_eq!(case.apply("UserJoined"), expected, "{spelling}");
        }
        assert!(Case::from_spelling("Snake_Case").is_none());
    }
}
