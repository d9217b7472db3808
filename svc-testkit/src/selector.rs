//! Label and field selectors, parsed and matched the way the API server does.
//!
//! Label selectors support `k=v`, `k==v`, `k!=v`, `k`, `!k`, `k in (a,b)`,
//! `k notin (a,b)`, `k>N` and `k<N`, joined by commas (AND). Field selectors
//! support `metadata.name` and `metadata.namespace` with `=`, `==` and `!=`.

use std::collections::BTreeMap;

use serde_json::Value;

/// A selector that failed to parse. The message is shown to the client.
#[derive(Debug, Clone, PartialEq, Eq)]
pub(crate) struct SelectorError(pub(crate) String);

/// One requirement of a label selector.
#[derive(Debug, Clone, PartialEq, Eq)]
enum Requirement {
    Exists(String),
    DoesNotExist(String),
    Equals(String, String),
    NotEquals(String, String),
    In(String, Vec<String>),
    NotIn(String, Vec<String>),
    GreaterThan(String, i64),
    LessThan(String, i64),
}

impl Requirement {
    fn matches(&self, labels: &BTreeMap<&str, &str>) -> bool {
        let get = |k: &String| labels.get(k.as_str()).copied();
        let int = |k: &String| get(k).and_then(|v| v.parse::<i64>().ok());
        match self {
            Requirement::Exists(k) => get(k).is_some(),
            Requirement::DoesNotExist(k) => get(k).is_none(),
            Requirement::Equals(k, v) => get(k) == Some(v.as_str()),
            Requirement::NotEquals(k, v) => get(k) != Some(v.as_str()),
            Requirement::In(k, vs) => get(k).is_some_and(|l| vs.iter().any(|v| v == l)),
            Requirement::NotIn(k, vs) => get(k).is_none_or(|l| vs.iter().all(|v| v != l)),
            Requirement::GreaterThan(k, n) => int(k).is_some_and(|l| l > *n),
            Requirement::LessThan(k, n) => int(k).is_some_and(|l| l < *n),
        }
    }
}

/// A parsed label selector: every requirement must hold. Empty matches all.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub(crate) struct LabelSelector {
    requirements: Vec<Requirement>,
}

impl LabelSelector {
    /// Parses the `labelSelector` query parameter.
    pub(crate) fn parse(input: &str) -> Result<Self, SelectorError> {
        let tokens = tokenize(input)?;
        let mut parser = Parser { tokens, pos: 0 };
        let mut requirements = Vec::new();
        if parser.peek().is_none() {
            return Ok(Self { requirements });
        }
        loop {
            requirements.push(parser.requirement()?);
            match parser.next() {
                None => break,
                Some(Token::Comma) => continue,
                Some(t) => return Err(err(format!("unexpected {t:?} after requirement"))),
            }
        }
        Ok(Self { requirements })
    }

    /// Whether `labels` satisfy every requirement.
    pub(crate) fn matches(&self, labels: &BTreeMap<&str, &str>) -> bool {
        self.requirements.iter().all(|r| r.matches(labels))
    }

    /// Whether this selector has no requirements.
    pub(crate) fn is_empty(&self) -> bool {
        self.requirements.is_empty()
    }
}

#[derive(Debug, Clone, PartialEq, Eq)]
enum Token {
    Ident(String),
    Not,
    Eq,
    NotEq,
    Gt,
    Lt,
    Open,
    Close,
    Comma,
}

fn err(msg: impl Into<String>) -> SelectorError {
    SelectorError(msg.into())
}

fn is_ident_char(c: char) -> bool {
    c.is_ascii_alphanumeric() || matches!(c, '-' | '_' | '.' | '/')
}

fn tokenize(input: &str) -> Result<Vec<Token>, SelectorError> {
    let mut tokens = Vec::new();
    let mut chars = input.chars().peekable();
    while let Some(c) = chars.next() {
        let token = match c {
            c if c.is_whitespace() => continue,
            ',' => Token::Comma,
            '(' => Token::Open,
            ')' => Token::Close,
            '>' => Token::Gt,
            '<' => Token::Lt,
            '=' => {
                chars.next_if_eq(&'=');
                Token::Eq
            }
            '!' if chars.next_if_eq(&'=').is_some() => Token::NotEq,
            '!' => Token::Not,
            c if is_ident_char(c) => {
                let mut ident = String::from(c);
                while let Some(c) = chars.next_if(|c| is_ident_char(*c)) {
                    ident.push(c);
                }
                Token::Ident(ident)
            }
            c => return Err(err(format!("invalid character {c:?} in label selector"))),
        };
        tokens.push(token);
    }
    Ok(tokens)
}

struct Parser {
    tokens: Vec<Token>,
    pos: usize,
}

impl Parser {
    fn peek(&self) -> Option<&Token> {
        self.tokens.get(self.pos)
    }

    fn next(&mut self) -> Option<Token> {
        let t = self.tokens.get(self.pos).cloned();
        self.pos += 1;
        t
    }

    fn key(&mut self) -> Result<String, SelectorError> {
        match self.next() {
            Some(Token::Ident(k)) if k != "in" && k != "notin" => Ok(k),
            other => Err(err(format!("expected a label key, found {other:?}"))),
        }
    }

    /// A value may be empty (`k=` or `k=,`), but must not contain `/`.
    fn value(&mut self) -> Result<String, SelectorError> {
        match self.peek() {
            None | Some(Token::Comma) | Some(Token::Close) => Ok(String::new()),
            Some(Token::Ident(v)) if !v.contains('/') => {
                let v = v.clone();
                self.pos += 1;
                Ok(v)
            }
            other => Err(err(format!("expected a label value, found {other:?}"))),
        }
    }

    fn set(&mut self) -> Result<Vec<String>, SelectorError> {
        if self.next() != Some(Token::Open) {
            return Err(err("expected '(' after in/notin"));
        }
        let mut values = Vec::new();
        loop {
            values.push(self.value()?);
            match self.next() {
                Some(Token::Comma) => continue,
                Some(Token::Close) => return Ok(values),
                other => return Err(err(format!("expected ',' or ')', found {other:?}"))),
            }
        }
    }

    fn int(&mut self) -> Result<i64, SelectorError> {
        match self.next() {
            Some(Token::Ident(v)) => v
                .parse()
                .map_err(|_| err(format!("expected an integer, found {v:?}"))),
            other => Err(err(format!("expected an integer, found {other:?}"))),
        }
    }

    fn requirement(&mut self) -> Result<Requirement, SelectorError> {
        if self.peek() == Some(&Token::Not) {
            self.pos += 1;
            return Ok(Requirement::DoesNotExist(self.key()?));
        }
        let key = self.key()?;
        let req = match self.peek() {
            None | Some(Token::Comma) => Requirement::Exists(key),
            Some(Token::Eq) => {
                self.pos += 1;
                Requirement::Equals(key, self.value()?)
            }
            Some(Token::NotEq) => {
                self.pos += 1;
                Requirement::NotEquals(key, self.value()?)
            }
            Some(Token::Gt) => {
                self.pos += 1;
                Requirement::GreaterThan(key, self.int()?)
            }
            Some(Token::Lt) => {
                self.pos += 1;
                Requirement::LessThan(key, self.int()?)
            }
            Some(Token::Ident(op)) if op == "in" => {
                self.pos += 1;
                Requirement::In(key, self.set()?)
            }
            Some(Token::Ident(op)) if op == "notin" => {
                self.pos += 1;
                Requirement::NotIn(key, self.set()?)
            }
            Some(t) => return Err(err(format!("unexpected {t:?} after key {key:?}"))),
        };
        Ok(req)
    }
}

/// A parsed field selector over `metadata.name` and `metadata.namespace`.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub(crate) struct FieldSelector {
    /// (field, value, negated)
    terms: Vec<(Field, String, bool)>,
}

#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum Field {
    Name,
    Namespace,
}

impl FieldSelector {
    /// Parses the `fieldSelector` query parameter.
    pub(crate) fn parse(input: &str) -> Result<Self, SelectorError> {
        let mut terms = Vec::new();
        for term in input.split(',').map(str::trim).filter(|t| !t.is_empty()) {
            let (field, value, negated) = if let Some((f, v)) = term.split_once("!=") {
                (f, v, true)
            } else if let Some((f, v)) = term.split_once("==") {
                (f, v, false)
            } else if let Some((f, v)) = term.split_once('=') {
                (f, v, false)
            } else {
                return Err(err(format!("invalid field selector term {term:?}")));
            };
            let field = match field.trim() {
                "metadata.name" => Field::Name,
                "metadata.namespace" => Field::Namespace,
                other => return Err(err(format!("field label not supported: {other}"))),
            };
            terms.push((field, value.trim().to_owned(), negated));
        }
        Ok(Self { terms })
    }

    /// Whether this selector has no terms.
    pub(crate) fn is_empty(&self) -> bool {
        self.terms.is_empty()
    }

    /// The value `field` must equal, when a term pins it.
    fn pinned(&self, field: Field) -> Option<&str> {
        self.terms
            .iter()
            .find(|(f, _, negated)| *f == field && !negated)
            .map(|(_, value, _)| value.as_str())
    }

    fn matches(&self, namespace: &str, name: &str) -> bool {
        self.terms.iter().all(|(field, value, negated)| {
            let actual = match field {
                Field::Name => name,
                Field::Namespace => namespace,
            };
            (actual == value) != *negated
        })
    }
}

/// Everything a list or watch request filters on: path namespace and selectors.
#[derive(Debug, Clone, Default)]
pub(crate) struct Filter {
    /// `Some` for namespaced paths.
    pub(crate) namespace: Option<String>,
    pub(crate) labels: LabelSelector,
    pub(crate) fields: FieldSelector,
}

impl Filter {
    /// The only namespace that can match (the path's, or `metadata.namespace=` of the field
    /// selector), so that a list reads that namespace's keys only, as the API server reads
    /// one etcd prefix.
    pub(crate) fn pinned_namespace(&self) -> Option<&str> {
        self.namespace
            .as_deref()
            .or_else(|| self.fields.pinned(Field::Namespace))
    }

    /// The only name that can match (`metadata.name=` of the field selector).
    pub(crate) fn pinned_name(&self) -> Option<&str> {
        self.fields.pinned(Field::Name)
    }

    /// Whether the stored JSON object passes this filter.
    pub(crate) fn matches(&self, object: &Value) -> bool {
        let meta = &object["metadata"];
        let ns = meta["namespace"].as_str().unwrap_or_default();
        let name = meta["name"].as_str().unwrap_or_default();
        if self.namespace.as_deref().is_some_and(|want| want != ns) {
            return false;
        }
        self.fields.matches(ns, name) && self.labels.matches(&labels_of(object))
    }
}

/// The labels of a stored JSON object.
pub(crate) fn labels_of(object: &Value) -> BTreeMap<&str, &str> {
    object["metadata"]["labels"]
        .as_object()
        .into_iter()
        .flatten()
        .filter_map(|(k, v)| Some((k.as_str(), v.as_str()?)))
        .collect()
}

#[cfg(test)]
mod tests;
