//! Label selectors and field selectors, as Kubernetes parses and matches them.
//!
//! A [`LabelSelector`] is a conjunction of [`Requirement`]s over an object's labels. It
//! comes from the string form used in `?labelSelector=` and `kubectl -l`:
//!
//! ```text
//! app=web, tier!=db, env in (prod,staging), track notin (canary), release, !legacy
//! ```
//!
//! or from the structured `matchLabels` / `matchExpressions` form of workload specs
//! ([`LabelSelector::from_k8s`]). Keys must be qualified names and values label values,
//! checked as Kubernetes does. Requirements are kept sorted, so [`Display`](fmt::Display)
//! prints a canonical string that parses back to an equal selector. The empty selector
//! matches everything.
//!
//! A [`FieldSelector`] (`?fieldSelector=spec.nodeName=node-1,status.phase!=Running`) is a
//! conjunction of equality tests on fields the caller knows how to read; a missing field
//! compares as the empty string, as in Kubernetes.

use std::collections::{BTreeMap, BTreeSet};
use std::fmt;
use std::str::FromStr;

use k8s_openapi::apimachinery::pkg::apis::meta::v1 as metav1;

use crate::validation;

/// Why a selector could not be parsed or built.
#[derive(Clone, Debug, PartialEq, Eq, thiserror::Error)]
pub enum SelectorError {
    /// The label selector string does not follow the grammar.
    #[error("unable to parse label selector {input:?}: {message}")]
    Syntax {
        /// The whole selector string.
        input: String,
        /// What was found and what was expected.
        message: String,
    },
    /// A label key is not a qualified name.
    #[error("invalid label key {key:?}: {reason}")]
    InvalidKey {
        /// The key.
        key: String,
        /// Kubernetes' explanation, `; `-separated when there are several.
        reason: String,
    },
    /// A label value is not a valid label value.
    #[error("invalid label value {value:?} for key {key:?}: {reason}")]
    InvalidValue {
        /// The key the value belongs to.
        key: String,
        /// The value.
        value: String,
        /// Kubernetes' explanation, `; `-separated when there are several.
        reason: String,
    },
    /// A `matchExpressions` operator other than In, NotIn, Exists and DoesNotExist.
    #[error(
        "{operator:?} is not a valid label selector operator: use In, NotIn, Exists or DoesNotExist"
    )]
    InvalidOperator {
        /// The operator as written.
        operator: String,
    },
    /// `In` or `NotIn` without values.
    #[error("the requirement on {key:?} needs at least one value for operator {operator}")]
    ValuesRequired {
        /// The key.
        key: String,
        /// The operator.
        operator: Operator,
    },
    /// `Exists` or `DoesNotExist` with values.
    #[error("the requirement on {key:?} must have no values for operator {operator}: remove them")]
    ValuesForbidden {
        /// The key.
        key: String,
        /// The operator.
        operator: Operator,
    },
    /// `=` or `!=` with other than exactly one value.
    #[error("the requirement on {key:?} needs exactly one value for operator {operator}")]
    SingleValueRequired {
        /// The key.
        key: String,
        /// The operator.
        operator: Operator,
    },
    /// The field selector string does not follow the grammar.
    #[error("unable to parse field selector {input:?}: {message}")]
    FieldSyntax {
        /// The whole selector string.
        input: String,
        /// What went wrong.
        message: String,
    },
}

/// How a [`Requirement`] tests a label.
#[derive(Clone, Copy, Debug, PartialEq, Eq, PartialOrd, Ord, Hash)]
pub enum Operator {
    /// `key=value` (also written `key==value`, and the form `matchLabels` produce).
    Equals,
    /// `key!=value`: true when the label is absent or differs.
    NotEquals,
    /// `key in (a,b)`.
    In,
    /// `key notin (a,b)`: true when the label is absent or not listed.
    NotIn,
    /// `key`: the label is present.
    Exists,
    /// `!key`: the label is absent.
    DoesNotExist,
}

impl fmt::Display for Operator {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(match self {
            Operator::Equals => "=",
            Operator::NotEquals => "!=",
            Operator::In => "In",
            Operator::NotIn => "NotIn",
            Operator::Exists => "Exists",
            Operator::DoesNotExist => "DoesNotExist",
        })
    }
}

/// One test on one label key. Build it with [`Requirement::new`], which validates it.
#[derive(Clone, Debug, PartialEq, Eq, PartialOrd, Ord, Hash)]
pub struct Requirement {
    key: String,
    operator: Operator,
    values: BTreeSet<String>,
}

impl Requirement {
    /// A requirement, checked as Kubernetes' `NewRequirement` does: the key must be a
    /// qualified name, values valid label values; `In`/`NotIn` need values, `=`/`!=`
    /// exactly one, `Exists`/`DoesNotExist` none.
    pub fn new<I, S>(
        key: impl Into<String>,
        operator: Operator,
        values: I,
    ) -> Result<Requirement, SelectorError>
    where
        I: IntoIterator<Item = S>,
        S: Into<String>,
    {
        let key = key.into();
        let values: BTreeSet<String> = values.into_iter().map(Into::into).collect();
        let errors = validation::qualified_name_errors(&key);
        if !errors.is_empty() {
            return Err(SelectorError::InvalidKey {
                key,
                reason: errors.join("; "),
            });
        }
        match operator {
            Operator::In | Operator::NotIn if values.is_empty() => {
                return Err(SelectorError::ValuesRequired { key, operator });
            }
            Operator::Equals | Operator::NotEquals if values.len() != 1 => {
                return Err(SelectorError::SingleValueRequired { key, operator });
            }
            Operator::Exists | Operator::DoesNotExist if !values.is_empty() => {
                return Err(SelectorError::ValuesForbidden { key, operator });
            }
            _ => {}
        }
        for value in &values {
            let errors = validation::label_value_errors(value);
            if !errors.is_empty() {
                return Err(SelectorError::InvalidValue {
                    key,
                    value: value.clone(),
                    reason: errors.join("; "),
                });
            }
        }
        Ok(Requirement {
            key,
            operator,
            values,
        })
    }

    /// The label key.
    pub fn key(&self) -> &str {
        &self.key
    }

    /// The operator.
    pub fn operator(&self) -> Operator {
        self.operator
    }

    /// The values, sorted (one for `=`/`!=`, none for `Exists`/`DoesNotExist`).
    pub fn values(&self) -> &BTreeSet<String> {
        &self.values
    }

    /// Whether `labels` satisfy this requirement.
    pub fn matches(&self, labels: &BTreeMap<String, String>) -> bool {
        let value = labels.get(&self.key);
        match self.operator {
            Operator::Equals | Operator::In => value.is_some_and(|v| self.values.contains(v)),
            Operator::NotEquals | Operator::NotIn => value.is_none_or(|v| !self.values.contains(v)),
            Operator::Exists => value.is_some(),
            Operator::DoesNotExist => value.is_none(),
        }
    }
}

impl fmt::Display for Requirement {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        let first = || self.values.iter().next().map_or("", String::as_str);
        let list = || {
            self.values
                .iter()
                .map(String::as_str)
                .collect::<Vec<_>>()
                .join(",")
        };
        match self.operator {
            Operator::Equals => write!(f, "{}={}", self.key, first()),
            Operator::NotEquals => write!(f, "{}!={}", self.key, first()),
            Operator::In => write!(f, "{} in ({})", self.key, list()),
            Operator::NotIn => write!(f, "{} notin ({})", self.key, list()),
            Operator::Exists => f.write_str(&self.key),
            Operator::DoesNotExist => write!(f, "!{}", self.key),
        }
    }
}

/// A label selector: all requirements must hold. See the [module docs](self).
#[derive(Clone, Debug, Default, PartialEq, Eq, Hash)]
pub struct LabelSelector {
    /// Sorted and without duplicates, so that equal selectors compare equal.
    requirements: Vec<Requirement>,
}

impl LabelSelector {
    /// The selector that matches everything.
    pub fn everything() -> LabelSelector {
        LabelSelector::default()
    }

    /// Parses the string form (`a=b,c in (d,e),!f`); an empty or blank string gives the
    /// empty selector.
    pub fn parse(input: &str) -> Result<LabelSelector, SelectorError> {
        Parser::new(input).parse()
    }

    /// Converts the structured form of workload specs. `matchLabels` entries become `=`
    /// requirements; `matchExpressions` accept In, NotIn, Exists and DoesNotExist.
    pub fn from_k8s(sel: &metav1::LabelSelector) -> Result<LabelSelector, SelectorError> {
        let mut requirements = Vec::new();
        for (key, value) in sel.match_labels.iter().flatten() {
            requirements.push(Requirement::new(
                key.clone(),
                Operator::Equals,
                [value.clone()],
            )?);
        }
        for expr in sel.match_expressions.iter().flatten() {
            let operator = match expr.operator.as_str() {
                "In" => Operator::In,
                "NotIn" => Operator::NotIn,
                "Exists" => Operator::Exists,
                "DoesNotExist" => Operator::DoesNotExist,
                other => {
                    return Err(SelectorError::InvalidOperator {
                        operator: other.to_owned(),
                    });
                }
            };
            let values = expr.values.clone().unwrap_or_default();
            requirements.push(Requirement::new(expr.key.clone(), operator, values)?);
        }
        Ok(LabelSelector::from_requirements(requirements))
    }

    /// The selector requiring exactly these labels (`key=value` for each entry), like
    /// Kubernetes' `SelectorFromValidatedSet` but with the entries validated.
    pub fn from_labels(labels: &BTreeMap<String, String>) -> Result<LabelSelector, SelectorError> {
        let requirements = labels
            .iter()
            .map(|(k, v)| Requirement::new(k.clone(), Operator::Equals, [v.clone()]))
            .collect::<Result<Vec<_>, _>>()?;
        Ok(LabelSelector::from_requirements(requirements))
    }

    /// The conjunction of already validated requirements.
    pub fn from_requirements(mut requirements: Vec<Requirement>) -> LabelSelector {
        requirements.sort();
        requirements.dedup();
        LabelSelector { requirements }
    }

    /// The requirements, sorted by key.
    pub fn requirements(&self) -> &[Requirement] {
        &self.requirements
    }

    /// Whether this is the empty selector, which matches everything.
    pub fn is_empty(&self) -> bool {
        self.requirements.is_empty()
    }

    /// Whether `labels` satisfy every requirement.
    pub fn matches(&self, labels: &BTreeMap<String, String>) -> bool {
        self.requirements.iter().all(|r| r.matches(labels))
    }
}

impl fmt::Display for LabelSelector {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        for (i, r) in self.requirements.iter().enumerate() {
            if i > 0 {
                f.write_str(",")?;
            }
            write!(f, "{r}")?;
        }
        Ok(())
    }
}

impl FromStr for LabelSelector {
    type Err = SelectorError;

    fn from_str(s: &str) -> Result<Self, Self::Err> {
        LabelSelector::parse(s)
    }
}

/// A token of the label selector grammar.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
enum Token<'a> {
    /// A run of characters that are neither blank nor special; `in` and `notin` are
    /// identifiers too, and become operators only where an operator is expected.
    Ident(&'a str),
    Bang,
    NotEquals,
    Equals,
    DoubleEquals,
    Open,
    Close,
    Comma,
    /// `<` and `>` (Kubernetes' Lt/Gt, which wk does not support), lexed for clear errors.
    Other(&'a str),
}

impl fmt::Display for Token<'_> {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(match self {
            Token::Ident(s) | Token::Other(s) => s,
            Token::Bang => "!",
            Token::NotEquals => "!=",
            Token::Equals => "=",
            Token::DoubleEquals => "==",
            Token::Open => "(",
            Token::Close => ")",
            Token::Comma => ",",
        })
    }
}

fn is_special(c: char) -> bool {
    matches!(c, '=' | '!' | '(' | ')' | ',' | '<' | '>')
}

fn lex(input: &str) -> Vec<Token<'_>> {
    let mut tokens = Vec::new();
    let mut rest = input;
    while let Some(c) = rest.chars().next() {
        if c.is_whitespace() {
            rest = &rest[c.len_utf8()..];
            continue;
        }
        let two = rest.get(..2);
        let (token, len) = match c {
            '!' if two == Some("!=") => (Token::NotEquals, 2),
            '!' => (Token::Bang, 1),
            '=' if two == Some("==") => (Token::DoubleEquals, 2),
            '=' => (Token::Equals, 1),
            '(' => (Token::Open, 1),
            ')' => (Token::Close, 1),
            ',' => (Token::Comma, 1),
            '<' | '>' => (Token::Other(&rest[..1]), 1),
            _ => {
                let len = rest
                    .find(|c: char| c.is_whitespace() || is_special(c))
                    .unwrap_or(rest.len());
                (Token::Ident(&rest[..len]), len)
            }
        };
        tokens.push(token);
        rest = &rest[len..];
    }
    tokens
}

/// A recursive-descent parser over the tokens of one label selector string.
struct Parser<'a> {
    input: &'a str,
    tokens: Vec<Token<'a>>,
    pos: usize,
}

impl<'a> Parser<'a> {
    fn new(input: &'a str) -> Parser<'a> {
        Parser {
            input,
            tokens: lex(input),
            pos: 0,
        }
    }

    fn peek(&self) -> Option<Token<'a>> {
        self.tokens.get(self.pos).copied()
    }

    fn next(&mut self) -> Option<Token<'a>> {
        let t = self.peek();
        self.pos += 1;
        t
    }

    fn unexpected(&self, found: Option<Token<'_>>, expected: &str) -> SelectorError {
        let found = found.map_or_else(|| "end of string".to_owned(), |t| format!("'{t}'"));
        SelectorError::Syntax {
            input: self.input.to_owned(),
            message: format!("found {found}, expected: {expected}"),
        }
    }

    fn parse(mut self) -> Result<LabelSelector, SelectorError> {
        let mut requirements = Vec::new();
        if self.tokens.is_empty() {
            return Ok(LabelSelector::default());
        }
        loop {
            requirements.push(self.requirement()?);
            match self.next() {
                None => break,
                Some(Token::Comma) => continue,
                found => return Err(self.unexpected(found, "',' or end of string")),
            }
        }
        Ok(LabelSelector::from_requirements(requirements))
    }

    fn requirement(&mut self) -> Result<Requirement, SelectorError> {
        let mut token = self.next();
        let negated = token == Some(Token::Bang);
        if negated {
            token = self.next();
        }
        let Some(Token::Ident(key)) = token else {
            return Err(self.unexpected(token, "identifier"));
        };
        if negated {
            return Requirement::new(key, Operator::DoesNotExist, Vec::<String>::new());
        }
        if matches!(self.peek(), None | Some(Token::Comma)) {
            return Requirement::new(key, Operator::Exists, Vec::<String>::new());
        }
        let operator = match self.next() {
            Some(Token::Ident("in")) => Operator::In,
            Some(Token::Ident("notin")) => Operator::NotIn,
            Some(Token::Equals | Token::DoubleEquals) => Operator::Equals,
            Some(Token::NotEquals) => Operator::NotEquals,
            found => return Err(self.unexpected(found, "'=', '==', '!=', 'in' or 'notin'")),
        };
        let values = match operator {
            Operator::In | Operator::NotIn => self.value_list()?,
            _ => vec![self.exact_value()?],
        };
        Requirement::new(key, operator, values)
    }

    /// The value after `=`, `==` or `!=`; nothing before `,` or the end means "".
    fn exact_value(&mut self) -> Result<&'a str, SelectorError> {
        match self.peek() {
            None | Some(Token::Comma) => Ok(""),
            Some(Token::Ident(value)) => {
                self.pos += 1;
                Ok(value)
            }
            found => Err(self.unexpected(found, "identifier")),
        }
    }

    /// `( v1, v2, ... )`. As in Kubernetes an empty item is the empty value, so `()` is
    /// `("")` and `(a,)` is `(a, "")`.
    fn value_list(&mut self) -> Result<Vec<&'a str>, SelectorError> {
        let open = self.next();
        if open != Some(Token::Open) {
            return Err(self.unexpected(open, "'('"));
        }
        let mut values = Vec::new();
        let mut item: Option<&'a str> = None;
        loop {
            match self.next() {
                Some(Token::Ident(v)) if item.is_none() => item = Some(v),
                Some(Token::Comma) => values.push(item.take().unwrap_or("")),
                Some(Token::Close) => {
                    values.push(item.take().unwrap_or(""));
                    return Ok(values);
                }
                found if item.is_some() => return Err(self.unexpected(found, "',' or ')'")),
                found => return Err(self.unexpected(found, "',', ')' or identifier")),
            }
        }
    }
}

/// How a [`FieldRequirement`] compares a field with its value.
#[derive(Clone, Copy, Debug, PartialEq, Eq, PartialOrd, Ord, Hash)]
pub enum FieldOperator {
    /// `field=value` or `field==value`.
    Equals,
    /// `field!=value`.
    NotEquals,
}

/// One `field=value` or `field!=value` test.
#[derive(Clone, Debug, PartialEq, Eq, Hash)]
pub struct FieldRequirement {
    /// The field path, such as `metadata.name` or `spec.nodeName`.
    pub field: String,
    /// The comparison.
    pub operator: FieldOperator,
    /// The value, unescaped.
    pub value: String,
}

impl FieldRequirement {
    /// Whether the field's value (`None` when the object lacks the field) passes.
    pub fn matches(&self, actual: Option<&str>) -> bool {
        let actual = actual.unwrap_or("");
        match self.operator {
            FieldOperator::Equals => actual == self.value,
            FieldOperator::NotEquals => actual != self.value,
        }
    }
}

impl fmt::Display for FieldRequirement {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        let op = match self.operator {
            FieldOperator::Equals => "=",
            FieldOperator::NotEquals => "!=",
        };
        write!(f, "{}{op}{}", self.field, escape_field_value(&self.value))
    }
}

/// A field selector: every requirement must hold. See the [module docs](self).
#[derive(Clone, Debug, Default, PartialEq, Eq, Hash)]
pub struct FieldSelector {
    requirements: Vec<FieldRequirement>,
}

impl FieldSelector {
    /// Parses `field=value,field!=value,field==value`. As in Kubernetes, `\,`, `\=` and
    /// `\\` escape those characters in values and empty terms are skipped; unlike
    /// Kubernetes, blanks around field names and values are trimmed.
    pub fn parse(input: &str) -> Result<FieldSelector, SelectorError> {
        let error = |message: String| SelectorError::FieldSyntax {
            input: input.to_owned(),
            message,
        };
        let mut requirements = Vec::new();
        for term in split_unescaped_commas(input) {
            if term.trim().is_empty() {
                continue;
            }
            let (field, operator, raw) = split_field_term(term).ok_or_else(|| {
                error(format!(
                    "cannot understand {term:?}: write field=value, field==value or field!=value"
                ))
            })?;
            let field = field.trim();
            // `!` and `\` would make the printed form ambiguous; no real field has them.
            if field.is_empty()
                || field.contains(|c: char| c.is_whitespace() || c == '!' || c == '\\')
            {
                return Err(error(format!(
                    "{term:?} does not start with a field name such as metadata.name"
                )));
            }
            let value = unescape_field_value(raw.trim()).map_err(error)?;
            requirements.push(FieldRequirement {
                field: field.to_owned(),
                operator,
                value,
            });
        }
        Ok(FieldSelector { requirements })
    }

    /// The requirements, in the order written.
    pub fn requirements(&self) -> &[FieldRequirement] {
        &self.requirements
    }

    /// Whether this is the empty selector, which matches everything.
    pub fn is_empty(&self) -> bool {
        self.requirements.is_empty()
    }

    /// Whether every requirement holds; `get` returns a field's value as a string, or
    /// `None` when the object lacks it (which compares as "").
    pub fn matches(&self, get: impl Fn(&str) -> Option<String>) -> bool {
        self.requirements
            .iter()
            .all(|r| r.matches(get(&r.field).as_deref()))
    }

    /// The value `field` must equal, if the selector pins it with `=` (Kubernetes'
    /// `RequiresExactMatch`); useful to look objects up by an index.
    pub fn exact_match(&self, field: &str) -> Option<&str> {
        self.requirements
            .iter()
            .find(|r| r.field == field && r.operator == FieldOperator::Equals)
            .map(|r| r.value.as_str())
    }
}

impl fmt::Display for FieldSelector {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        for (i, r) in self.requirements.iter().enumerate() {
            if i > 0 {
                f.write_str(",")?;
            }
            write!(f, "{r}")?;
        }
        Ok(())
    }
}

impl FromStr for FieldSelector {
    type Err = SelectorError;

    fn from_str(s: &str) -> Result<Self, Self::Err> {
        FieldSelector::parse(s)
    }
}

/// Splits on commas not preceded by a backslash escape.
fn split_unescaped_commas(input: &str) -> Vec<&str> {
    let mut terms = Vec::new();
    let mut start = 0;
    let mut escaped = false;
    for (i, c) in input.char_indices() {
        if escaped {
            escaped = false;
        } else if c == '\\' {
            escaped = true;
        } else if c == ',' {
            terms.push(&input[start..i]);
            start = i + 1;
        }
    }
    terms.push(&input[start..]);
    terms
}

/// Splits a term at its leftmost operator, preferring `!=`, then `==`, then `=`.
fn split_field_term(term: &str) -> Option<(&str, FieldOperator, &str)> {
    for (i, _) in term.char_indices() {
        let rest = &term[i..];
        for (op, operator) in [
            ("!=", FieldOperator::NotEquals),
            ("==", FieldOperator::Equals),
            ("=", FieldOperator::Equals),
        ] {
            if let Some(value) = rest.strip_prefix(op) {
                return Some((&term[..i], operator, value));
            }
        }
    }
    None
}

fn escape_field_value(value: &str) -> String {
    let mut out = String::with_capacity(value.len());
    for c in value.chars() {
        if matches!(c, '\\' | ',' | '=') {
            out.push('\\');
        }
        out.push(c);
    }
    out
}

fn unescape_field_value(raw: &str) -> Result<String, String> {
    let mut out = String::with_capacity(raw.len());
    let mut chars = raw.chars();
    while let Some(c) = chars.next() {
        match c {
            '\\' => match chars.next() {
                Some(e @ ('\\' | ',' | '=')) => out.push(e),
                Some(e) => {
                    return Err(format!(
                        "invalid escape sequence \"\\{e}\" in {raw:?}: only \\\\, \\, and \\= are escapes"
                    ));
                }
                None => {
                    return Err(format!(
                        "{raw:?} ends in a lone backslash: write \\\\ for a backslash"
                    ));
                }
            },
            ',' | '=' => return Err(format!("unescaped {c:?} in value {raw:?}: write \\{c}")),
            _ => out.push(c),
        }
    }
    Ok(out)
}

#[cfg(test)]
mod tests {
    use super::*;
    use proptest::prelude::*;

    fn labels(pairs: &[(&str, &str)]) -> BTreeMap<String, String> {
        pairs
            .iter()
            .map(|(k, v)| (k.to_string(), v.to_string()))
            .collect()
    }

    fn sel(s: &str) -> LabelSelector {
        LabelSelector::parse(s).unwrap_or_else(|e| panic!("{s}: {e}"))
    }

    #[test]
    fn parses_every_operator() {
        let s = sel("a=b, c==d ,e!=f,g in (x, y),h notin (z),i,!j");
        let ops: Vec<_> = s
            .requirements()
            .iter()
            .map(|r| (r.key(), r.operator()))
            .collect();
        assert_eq!(
            ops,
            [
                ("a", Operator::Equals),
                ("c", Operator::Equals),
                ("e", Operator::NotEquals),
                ("g", Operator::In),
                ("h", Operator::NotIn),
                ("i", Operator::Exists),
                ("j", Operator::DoesNotExist),
            ]
        );
        assert_eq!(s.to_string(), "a=b,c=d,e!=f,g in (x,y),h notin (z),i,!j");
    }

    #[test]
    fn canonical_form_is_sorted_and_deduplicated() {
        assert_eq!(
            sel("z=1,a in (c,b,c),a=1,z=1").to_string(),
            "a=1,a in (b,c),z=1"
        );
        assert_eq!(sel("b,a"), sel("a,b"));
    }

    #[test]
    fn blank_selector_is_empty_and_matches_everything() {
        for s in ["", "   "] {
            let s = sel(s);
            assert!(s.is_empty());
            assert!(s.matches(&labels(&[])));
            assert!(s.matches(&labels(&[("a", "b")])));
            assert_eq!(s.to_string(), "");
        }
    }

    #[test]
    fn matches_like_kubernetes() {
        let l = labels(&[
            ("app", "web"),
            ("env", "prod"),
            ("example.com/tier", "front"),
        ]);
        let cases = [
            ("app=web", true),
            ("app==web", true),
            ("app=db", false),
            ("app!=db", true),
            ("app!=web", false),
            ("missing!=x", true),
            ("env in (prod,staging)", true),
            ("env in (staging)", false),
            ("missing in (x)", false),
            ("env notin (staging)", true),
            ("env notin (prod)", false),
            ("missing notin (x)", true),
            ("app", true),
            ("missing", false),
            ("!missing", true),
            ("!app", false),
            ("example.com/tier=front", true),
            ("app=web,env=dev", false),
            ("app=web,env=prod,!legacy", true),
            ("missing=", false),
            ("missing!=", true),
        ];
        for (s, want) in cases {
            assert_eq!(sel(s).matches(&l), want, "{s}");
        }
        assert!(sel("a=").matches(&labels(&[("a", "")])));
        assert!(sel("a in ()").matches(&labels(&[("a", "")])));
    }

    #[test]
    fn empty_items_in_lists_are_empty_values() {
        let values = |s: &str| {
            sel(s).requirements()[0]
                .values()
                .iter()
                .cloned()
                .collect::<Vec<_>>()
        };
        assert_eq!(values("a in ()"), [""]);
        assert_eq!(values("a in (,)"), [""]);
        assert_eq!(values("a in (x,)"), ["", "x"]);
        assert_eq!(values("a in (,x)"), ["", "x"]);
        assert_eq!(values("a in (x,,y)"), ["", "x", "y"]);
        assert_eq!(sel("a in (x,,y)").to_string(), "a in (,x,y)");
        assert_eq!(sel("a in ()").to_string(), "a in ()");
    }

    #[test]
    fn keywords_are_identifiers_where_one_is_expected() {
        assert_eq!(sel("in in (in,notin)").to_string(), "in in (in,notin)");
        assert_eq!(sel("notin=in").to_string(), "notin=in");
        assert_eq!(sel("in").requirements()[0].operator(), Operator::Exists);
        assert_eq!(sel("a in(x)").to_string(), "a in (x)");
    }

    #[test]
    fn reports_syntax_errors() {
        let msg = |s: &str| match LabelSelector::parse(s) {
            Err(SelectorError::Syntax { message, .. }) => message,
            other => panic!("{s}: {other:?}"),
        };
        assert_eq!(msg("a,"), "found end of string, expected: identifier");
        assert_eq!(msg(",a"), "found ',', expected: identifier");
        assert_eq!(msg("a=b=c"), "found '=', expected: ',' or end of string");
        assert_eq!(
            msg("a b"),
            "found 'b', expected: '=', '==', '!=', 'in' or 'notin'"
        );
        assert_eq!(msg("a in x"), "found 'x', expected: '('");
        assert_eq!(msg("a in (x"), "found end of string, expected: ',' or ')'");
        assert_eq!(msg("a in (x y)"), "found 'y', expected: ',' or ')'");
        assert_eq!(
            msg("a in (=)"),
            "found '=', expected: ',', ')' or identifier"
        );
        assert_eq!(msg("!a=b"), "found '=', expected: ',' or end of string");
        assert_eq!(
            msg("a>1"),
            "found '>', expected: '=', '==', '!=', 'in' or 'notin'"
        );
        assert_eq!(msg("a=(b)"), "found '(', expected: identifier");
        assert_eq!(msg("!"), "found end of string, expected: identifier");
        assert_eq!(
            LabelSelector::parse("a,").unwrap_err().to_string(),
            "unable to parse label selector \"a,\": found end of string, expected: identifier"
        );
    }

    #[test]
    fn validates_keys_and_values() {
        assert!(matches!(
            LabelSelector::parse("-a=b"),
            Err(SelectorError::InvalidKey { .. })
        ));
        assert!(matches!(
            LabelSelector::parse("a/b/c=d"),
            Err(SelectorError::InvalidKey { .. })
        ));
        assert!(matches!(
            LabelSelector::parse("Example.com/a=b"),
            Err(SelectorError::InvalidKey { .. })
        ));
        assert!(matches!(
            LabelSelector::parse(&format!("{}=b", "k".repeat(64))),
            Err(SelectorError::InvalidKey { .. })
        ));
        assert!(matches!(
            LabelSelector::parse("a=b_"),
            Err(SelectorError::InvalidValue { .. })
        ));
        assert!(matches!(
            LabelSelector::parse(&format!("a={}", "v".repeat(64))),
            Err(SelectorError::InvalidValue { .. })
        ));
        assert!(LabelSelector::parse(&format!("a={}", "v".repeat(63))).is_ok());
        assert!(LabelSelector::parse("example.com/My_Key-1.x=Some.Value_2").is_ok());
        let err = LabelSelector::parse("a=b_").unwrap_err();
        assert_eq!(
            err.to_string(),
            "invalid label value \"b_\" for key \"a\": a valid label must be an empty string or consist of alphanumeric characters, '-', '_' or '.', and must start and end with an alphanumeric character (e.g. 'MyValue',  or 'my_value',  or '12345', regex used for validation is '(([A-Za-z0-9][-A-Za-z0-9_.]*)?[A-Za-z0-9])?')"
        );
    }

    #[test]
    fn converts_structured_selectors() {
        let k = metav1::LabelSelector {
            match_labels: Some(labels(&[("app", "web")])),
            match_expressions: Some(vec![
                metav1::LabelSelectorRequirement {
                    key: "env".into(),
                    operator: "In".into(),
                    values: Some(vec!["prod".into(), "dev".into()]),
                },
                metav1::LabelSelectorRequirement {
                    key: "legacy".into(),
                    operator: "DoesNotExist".into(),
                    values: None,
                },
            ]),
        };
        let s = LabelSelector::from_k8s(&k).unwrap();
        assert_eq!(s.to_string(), "app=web,env in (dev,prod),!legacy");
        assert!(s.matches(&labels(&[("app", "web"), ("env", "dev")])));
        assert!(!s.matches(&labels(&[("app", "web"), ("env", "dev"), ("legacy", "1")])));
        assert!(
            LabelSelector::from_k8s(&metav1::LabelSelector::default())
                .unwrap()
                .is_empty()
        );
    }

    #[test]
    fn structured_selectors_are_checked() {
        let expr = |op: &str, values: Option<Vec<String>>| metav1::LabelSelector {
            match_labels: None,
            match_expressions: Some(vec![metav1::LabelSelectorRequirement {
                key: "k".into(),
                operator: op.into(),
                values,
            }]),
        };
        assert_eq!(
            LabelSelector::from_k8s(&expr("In", Some(vec![]))),
            Err(SelectorError::ValuesRequired {
                key: "k".into(),
                operator: Operator::In
            })
        );
        assert_eq!(
            LabelSelector::from_k8s(&expr("NotIn", None)),
            Err(SelectorError::ValuesRequired {
                key: "k".into(),
                operator: Operator::NotIn
            })
        );
        assert_eq!(
            LabelSelector::from_k8s(&expr("Exists", Some(vec!["x".into()]))),
            Err(SelectorError::ValuesForbidden {
                key: "k".into(),
                operator: Operator::Exists
            })
        );
        assert_eq!(
            LabelSelector::from_k8s(&expr("Gt", Some(vec!["1".into()]))),
            Err(SelectorError::InvalidOperator {
                operator: "Gt".into()
            })
        );
        assert_eq!(
            LabelSelector::from_k8s(&expr("Gt", None))
                .unwrap_err()
                .to_string(),
            "\"Gt\" is not a valid label selector operator: use In, NotIn, Exists or DoesNotExist"
        );
        assert!(LabelSelector::from_k8s(&expr("In", Some(vec!["bad value".into()]))).is_err());
    }

    #[test]
    fn requirement_new_checks_value_counts() {
        assert!(Requirement::new("a", Operator::Equals, ["x", "y"]).is_err());
        assert!(Requirement::new("a", Operator::NotEquals, Vec::<String>::new()).is_err());
        assert!(Requirement::new("a", Operator::Equals, [""]).is_ok());
    }

    #[test]
    fn field_selectors_parse_and_match() {
        let f =
            FieldSelector::parse("metadata.name=x,spec.nodeName!=y,status.phase==Running").unwrap();
        assert_eq!(
            f.requirements(),
            [
                FieldRequirement {
                    field: "metadata.name".into(),
                    operator: FieldOperator::Equals,
                    value: "x".into()
                },
                FieldRequirement {
                    field: "spec.nodeName".into(),
                    operator: FieldOperator::NotEquals,
                    value: "y".into()
                },
                FieldRequirement {
                    field: "status.phase".into(),
                    operator: FieldOperator::Equals,
                    value: "Running".into()
                },
            ]
        );
        assert_eq!(
            f.to_string(),
            "metadata.name=x,spec.nodeName!=y,status.phase=Running"
        );
        let obj = |name: &'static str, node: Option<&'static str>, phase: &'static str| {
            move |field: &str| match field {
                "metadata.name" => Some(name.to_owned()),
                "spec.nodeName" => node.map(str::to_owned),
                "status.phase" => Some(phase.to_owned()),
                _ => None,
            }
        };
        assert!(f.matches(obj("x", Some("z"), "Running")));
        assert!(f.matches(obj("x", None, "Running")));
        assert!(!f.matches(obj("x", Some("y"), "Running")));
        assert!(!f.matches(obj("w", None, "Running")));
        assert!(!f.matches(obj("x", None, "Pending")));
        assert_eq!(f.exact_match("metadata.name"), Some("x"));
        assert_eq!(f.exact_match("spec.nodeName"), None);
    }

    #[test]
    fn missing_fields_compare_as_empty() {
        let unscheduled = FieldSelector::parse("spec.nodeName=").unwrap();
        assert!(unscheduled.matches(|_| None));
        assert!(unscheduled.matches(|_| Some(String::new())));
        assert!(!unscheduled.matches(|_| Some("n1".into())));
        assert!(
            FieldSelector::parse("spec.nodeName!=")
                .unwrap()
                .matches(|_| Some("n1".into()))
        );
    }

    #[test]
    fn field_selector_escapes_and_blanks() {
        let f = FieldSelector::parse(r"metadata.name=a\,b\=c\\d").unwrap();
        assert_eq!(f.requirements()[0].value, r"a,b=c\d");
        assert_eq!(f.to_string(), r"metadata.name=a\,b\=c\\d");
        let f = FieldSelector::parse(" metadata.name = x , ,status.phase=Running").unwrap();
        assert_eq!(f.to_string(), "metadata.name=x,status.phase=Running");
        assert!(FieldSelector::parse("").unwrap().is_empty());
        assert!(FieldSelector::parse("").unwrap().matches(|_| None));
        // The leftmost operator wins, `!=` before `==` before `=`.
        let f = FieldSelector::parse("a!=b").unwrap();
        assert_eq!(f.requirements()[0].operator, FieldOperator::NotEquals);
    }

    #[test]
    fn field_selector_errors() {
        let msg = |s: &str| match FieldSelector::parse(s) {
            Err(SelectorError::FieldSyntax { message, .. }) => message,
            other => panic!("{s}: {other:?}"),
        };
        assert_eq!(
            msg("metadata.name"),
            "cannot understand \"metadata.name\": write field=value, field==value or field!=value"
        );
        assert_eq!(
            msg("=x"),
            "\"=x\" does not start with a field name such as metadata.name"
        );
        assert_eq!(msg("a=b=c"), "unescaped '=' in value \"b=c\": write \\=");
        assert_eq!(
            msg(r"a=b\x"),
            "invalid escape sequence \"\\x\" in \"b\\\\x\": only \\\\, \\, and \\= are escapes"
        );
        assert_eq!(
            msg(r"a=b\"),
            "\"b\\\\\" ends in a lone backslash: write \\\\ for a backslash"
        );
    }

    fn name_part() -> impl Strategy<Value = String> {
        prop_oneof!["[a-zA-Z0-9]", "[a-zA-Z0-9][-a-zA-Z0-9_.]{0,20}[a-zA-Z0-9]"]
    }

    fn label_key() -> impl Strategy<Value = String> {
        let prefix = prop_oneof![
            Just(String::new()),
            "[a-z0-9]([a-z0-9-]{0,8}[a-z0-9])?(\\.[a-z0-9]{1,5}){0,2}/"
        ];
        (prefix, name_part()).prop_map(|(p, n)| format!("{p}{n}"))
    }

    fn label_value() -> impl Strategy<Value = String> {
        prop_oneof![Just(String::new()), name_part()]
    }

    fn requirement() -> impl Strategy<Value = Requirement> {
        let op = prop::sample::select(vec![
            Operator::Equals,
            Operator::NotEquals,
            Operator::In,
            Operator::NotIn,
            Operator::Exists,
            Operator::DoesNotExist,
        ]);
        (label_key(), op, prop::collection::vec(label_value(), 1..4)).prop_map(
            |(k, op, mut values)| {
                match op {
                    Operator::Equals | Operator::NotEquals => values.truncate(1),
                    Operator::Exists | Operator::DoesNotExist => values.clear(),
                    _ => {}
                }
                Requirement::new(k, op, values).unwrap()
            },
        )
    }

    proptest! {
        #[test]
        fn label_selector_display_round_trips(reqs in prop::collection::vec(requirement(), 0..6)) {
            let s = LabelSelector::from_requirements(reqs);
            let printed = s.to_string();
            let back = LabelSelector::parse(&printed).unwrap();
            prop_assert_eq!(&back, &s, "{}", printed);
            prop_assert_eq!(back.to_string(), printed);
        }

        #[test]
        fn selector_from_labels_matches_them(map in prop::collection::btree_map(label_key(), label_value(), 0..8)) {
            let s = LabelSelector::from_labels(&map).unwrap();
            prop_assert!(s.matches(&map));
            let reparsed = LabelSelector::parse(&s.to_string()).unwrap();
            prop_assert!(reparsed.matches(&map));
            // Any other value for one of the keys fails.
            if let Some((k, v)) = map.iter().next() {
                let mut other = map.clone();
                other.insert(k.clone(), format!("{v}x"));
                prop_assert!(!s.matches(&other));
            }
        }

        #[test]
        fn field_selector_display_round_trips(
            terms in prop::collection::vec(
                ("[a-z]{1,8}(\\.[a-zA-Z]{1,8}){0,2}", any::<bool>(), "[a-zA-Z0-9=,\\\\._-]{0,3}([a-zA-Z0-9=,\\\\._-]{0,8}[a-zA-Z0-9=,\\\\._-])?"),
                0..5,
            )
        ) {
            let s = FieldSelector {
                requirements: terms
                    .into_iter()
                    .map(|(field, ne, value)| FieldRequirement {
                        field,
                        operator: if ne { FieldOperator::NotEquals } else { FieldOperator::Equals },
                        value,
                    })
                    .collect(),
            };
            let printed = s.to_string();
            prop_assert_eq!(FieldSelector::parse(&printed).unwrap(), s, "{}", printed);
        }

        #[test]
        fn parsers_never_panic(s in "\\PC{0,40}") {
            let _ = LabelSelector::parse(&s);
            let _ = FieldSelector::parse(&s);
        }

        #[test]
        fn parsers_never_panic_on_selector_characters(s in "[a-c =!(),<>\\\\in]{0,30}") {
            if let Ok(sel) = LabelSelector::parse(&s) {
                prop_assert_eq!(LabelSelector::parse(&sel.to_string()).unwrap(), sel);
            }
            if let Ok(sel) = FieldSelector::parse(&s) {
                prop_assert_eq!(FieldSelector::parse(&sel.to_string()).unwrap(), sel);
            }
        }
    }
}
