//! Strict JSON parsing and the canonical writer whose bytes we sign and send.
//!
//! Owns: the [`Value`] tree every payload travels in, the rules for what ingest accepts
//! (duplicate keys, nesting depth, numbers that overflow a double, lone surrogates) and the
//! canonical form of wire.md §2 (keys sorted by code point, no whitespace, Python `repr` floats,
//! integers kept exactly as sent).
//! Must not touch: I/O of any kind. It is pure so that signing stays reproducible.
//!
//! We do not use `serde_json::Value` for payloads because it cannot keep integers beyond 64 bits,
//! formats small floats differently from Python, and silently stops sorting keys if any crate in
//! the build enables its `preserve_order` feature.

use std::fmt::Write as _;

/// The deepest nesting of arrays and objects ingest accepts. Deeper documents are almost always
/// hostile, and a bound keeps the recursive parser and writer well inside the stack. It is well
/// under serde_json's limit (which refuses 128 levels), because a stored payload must read back
/// through the API, which nests it a few levels deeper in its answers (and through clients
/// that parse those answers with serde_json).
pub const MAX_DEPTH: usize = 64;

/// A parsed JSON document. Objects keep their members sorted by key (code point order, which is
/// byte order in UTF-8), so the canonical writer never sorts and lookups can binary-search.
#[derive(Debug, Clone, PartialEq)]
pub enum Value {
    Null,
    Bool(bool),
    Number(Number),
    String(String),
    Array(Vec<Value>),
    Object(Object),
}

/// A JSON number as the receivers' canonicaliser (Python's `json`) sees it.
#[derive(Debug, Clone, PartialEq)]
pub enum Number {
    /// An integer literal (no fraction, no exponent), kept as its exact decimal digits with an
    /// optional leading `-`, however large.
    Int(String),
    /// Any literal with a fraction or an exponent: a finite double.
    Float(f64),
}

/// Object members sorted by key, keys unique.
#[derive(Debug, Clone, PartialEq, Default)]
pub struct Object(Vec<(String, Value)>);

impl Object {
    pub fn new() -> Self {
        Object(Vec::new())
    }

    pub fn get(&self, key: &str) -> Option<&Value> {
        self.0.binary_search_by(|(k, _)| k.as_str().cmp(key)).ok().map(|i| &self.0[i].1)
    }

    /// Inserts or replaces `key`, keeping the members sorted.
    pub fn insert(&mut self, key: String, value: Value) {
        match self.0.binary_search_by(|(k, _)| k.as_str().cmp(&key)) {
            Ok(i) => self.0[i].1 = value,
            Err(i) => self.0.insert(i, (key, value)),
        }
    }

    pub fn remove(&mut self, key: &str) -> Option<Value> {
        match self.0.binary_search_by(|(k, _)| k.as_str().cmp(key)) {
            Ok(i) => Some(self.0.remove(i).1),
            Err(_) => None,
        }
    }

    pub fn iter(&self) -> impl Iterator<Item = (&str, &Value)> {
        self.0.iter().map(|(k, v)| (k.as_str(), v))
    }

    pub fn len(&self) -> usize {
        self.0.len()
    }

    pub fn is_empty(&self) -> bool {
        self.0.is_empty()
    }
}

impl FromIterator<(String, Value)> for Object {
    fn from_iter<I: IntoIterator<Item = (String, Value)>>(iter: I) -> Self {
        let mut o = Object::new();
        for (k, v) in iter {
            o.insert(k, v);
        }
        o
    }
}

impl From<&serde_json::Value> for Value {
    /// A value built in code (an operational event, a test send) without a trip through text.
    /// Integers keep their digits; other numbers are floats, as the parser reads them.
    fn from(v: &serde_json::Value) -> Value {
        match v {
            serde_json::Value::Null => Value::Null,
            serde_json::Value::Bool(b) => Value::Bool(*b),
            serde_json::Value::Number(n) if n.is_f64() => Value::Number(Number::Float(n.as_f64().unwrap_or(0.0))),
            serde_json::Value::Number(n) => Value::Number(Number::Int(n.to_string())),
            serde_json::Value::String(s) => Value::String(s.clone()),
            serde_json::Value::Array(a) => Value::Array(a.iter().map(Value::from).collect()),
            serde_json::Value::Object(o) => Value::Object(o.iter().map(|(k, v)| (k.clone(), Value::from(v))).collect()),
        }
    }
}

impl Value {
    pub fn as_object(&self) -> Option<&Object> {
        match self {
            Value::Object(o) => Some(o),
            _ => None,
        }
    }

    pub fn as_str(&self) -> Option<&str> {
        match self {
            Value::String(s) => Some(s),
            _ => None,
        }
    }

    /// The canonical bytes of wire.md §2: keys sorted, no whitespace, Python float `repr`,
    /// integers exactly as sent.
    ///
    /// ```
    /// let v = hookgate::json::parse(br#"{"b": 1e-5, "a": [1.0, 1e16, 123456789012345678901234567890]}"#).unwrap();
    /// assert_eq!(v.to_canonical(), r#"{"a":[1.0,1e+16,123456789012345678901234567890],"b":1e-05}"#);
    /// ```
    pub fn to_canonical(&self) -> String {
        let mut out = String::new();
        write_canonical(&mut out, self);
        out
    }

    /// The JSON type's name, for error messages.
    pub fn kind(&self) -> &'static str {
        match self {
            Value::Null => "null",
            Value::Bool(_) => "a boolean",
            Value::Number(_) => "a number",
            Value::String(_) => "a string",
            Value::Array(_) => "an array",
            Value::Object(_) => "an object",
        }
    }
}

/// The canonical text of `obj` and the byte offset at which a member named `key` (which `obj`
/// must not hold) belongs: right after the last member whose key sorts before it, or right
/// after the `{`. Ingest stores this offset with the event so that dispatch can add each
/// delivery's `idempotency_key` by splicing text ([`splice_member`]) instead of parsing and
/// rewriting the payload for every attempt.
pub fn canonical_with_slot(obj: &Object, key: &str) -> (String, usize) {
    let mut out = String::from("{");
    let mut slot = None;
    for (i, (k, v)) in obj.0.iter().enumerate() {
        if slot.is_none() && k.as_str() > key {
            slot = Some(out.len());
        }
        if i > 0 {
            out.push(',');
        }
        write_string(&mut out, k);
        out.push(':');
        write_canonical(&mut out, v);
    }
    let slot = slot.unwrap_or(out.len());
    out.push('}');
    (out, slot)
}

/// Inserts the member `key: value` (a string) into `canonical`, an object's canonical text, at
/// `slot` as found by [`canonical_with_slot`]. The result is the canonical text of the object
/// with that member added. Returns `None` if `slot` cannot be such an offset.
pub fn splice_member(canonical: &str, slot: usize, key: &str, value: &str) -> Option<String> {
    let (before, after) = (canonical.get(..slot)?, canonical.get(slot..)?);
    let fits = before.starts_with('{')
        && after.ends_with('}')
        && if slot == 1 { after.starts_with('"') || after == "}" } else { after.starts_with(',') || after == "}" };
    if !fits {
        return None;
    }
    let mut out = String::with_capacity(canonical.len() + key.len() + value.len() + 8);
    out.push_str(before);
    if slot > 1 {
        out.push(',');
    }
    write_string(&mut out, key);
    out.push(':');
    write_string(&mut out, value);
    if slot == 1 && after != "}" {
        out.push(',');
    }
    out.push_str(after);
    Some(out)
}

/// Why a document was refused. The message is meant for the producer who sent it.
#[derive(Debug, Clone, PartialEq, thiserror::Error)]
#[error("{message}")]
pub struct ParseError {
    pub message: String,
}

fn err<T>(message: impl Into<String>) -> Result<T, ParseError> {
    Err(ParseError { message: message.into() })
}

/// Parses one JSON document (RFC 8259, no extensions), refusing invalid UTF-8, duplicate keys,
/// nesting deeper than [`MAX_DEPTH`], numbers that overflow a double and lone surrogates.
pub fn parse(bytes: &[u8]) -> Result<Value, ParseError> {
    let text = match std::str::from_utf8(bytes) {
        Ok(t) => t,
        Err(e) => {
            return err(format!("body is not valid UTF-8 (at byte {})", e.valid_up_to()));
        }
    };
    let mut p = Parser { s: text.as_bytes(), text, pos: 0 };
    p.skip_ws();
    let v = p.value(0)?;
    p.skip_ws();
    if p.pos != p.s.len() {
        return p.fail("unexpected characters after the JSON document");
    }
    Ok(v)
}

struct Parser<'a> {
    s: &'a [u8],
    text: &'a str,
    pos: usize,
}

impl Parser<'_> {
    fn fail<T>(&self, what: &str) -> Result<T, ParseError> {
        let before = &self.text.as_bytes()[..self.pos.min(self.s.len())];
        let line = before.iter().filter(|&&b| b == b'\n').count() + 1;
        let col = before.iter().rev().take_while(|&&b| b != b'\n').count() + 1;
        err(format!("malformed JSON at line {line} column {col}: {what}"))
    }

    fn skip_ws(&mut self) {
        while let Some(b' ' | b'\t' | b'\n' | b'\r') = self.s.get(self.pos) {
            self.pos += 1;
        }
    }

    fn value(&mut self, depth: usize) -> Result<Value, ParseError> {
        match self.s.get(self.pos) {
            None => self.fail("unexpected end of input"),
            Some(b'{') => self.object(depth + 1),
            Some(b'[') => self.array(depth + 1),
            Some(b'"') => Ok(Value::String(self.string()?)),
            Some(b't') => self.literal("true", Value::Bool(true)),
            Some(b'f') => self.literal("false", Value::Bool(false)),
            Some(b'n') => self.literal("null", Value::Null),
            Some(b'-' | b'0'..=b'9') => self.number(),
            Some(_) => self.fail("expected a value"),
        }
    }

    fn literal(&mut self, word: &str, v: Value) -> Result<Value, ParseError> {
        if self.s[self.pos..].starts_with(word.as_bytes()) {
            self.pos += word.len();
            Ok(v)
        } else {
            self.fail("expected a value")
        }
    }

    fn check_depth(&self, depth: usize) -> Result<(), ParseError> {
        if depth > MAX_DEPTH {
            return err(format!("JSON nesting is deeper than {MAX_DEPTH} levels"));
        }
        Ok(())
    }

    fn object(&mut self, depth: usize) -> Result<Value, ParseError> {
        self.check_depth(depth)?;
        self.pos += 1;
        let mut members: Vec<(String, Value)> = Vec::new();
        self.skip_ws();
        if self.s.get(self.pos) == Some(&b'}') {
            self.pos += 1;
            return Ok(Value::Object(Object::new()));
        }
        loop {
            self.skip_ws();
            if self.s.get(self.pos) != Some(&b'"') {
                return self.fail("expected a string key");
            }
            let key = self.string()?;
            self.skip_ws();
            if self.s.get(self.pos) != Some(&b':') {
                return self.fail("expected ':' after an object key");
            }
            self.pos += 1;
            self.skip_ws();
            let v = self.value(depth)?;
            members.push((key, v));
            self.skip_ws();
            match self.s.get(self.pos) {
                Some(b',') => self.pos += 1,
                Some(b'}') => {
                    self.pos += 1;
                    break;
                }
                _ => return self.fail("expected ',' or '}' in an object"),
            }
        }
        // A stable sort keeps the work O(n log n) even for hostile objects with many keys, and
        // duplicates end up adjacent.
        members.sort_by(|a, b| a.0.cmp(&b.0));
        if let Some(w) = members.windows(2).find(|w| w[0].0 == w[1].0) {
            return err(format!("duplicate key {:?} in a JSON object", w[0].0));
        }
        Ok(Value::Object(Object(members)))
    }

    fn array(&mut self, depth: usize) -> Result<Value, ParseError> {
        self.check_depth(depth)?;
        self.pos += 1;
        let mut items = Vec::new();
        self.skip_ws();
        if self.s.get(self.pos) == Some(&b']') {
            self.pos += 1;
            return Ok(Value::Array(items));
        }
        loop {
            self.skip_ws();
            items.push(self.value(depth)?);
            self.skip_ws();
            match self.s.get(self.pos) {
                Some(b',') => self.pos += 1,
                Some(b']') => {
                    self.pos += 1;
                    return Ok(Value::Array(items));
                }
                _ => return self.fail("expected ',' or ']' in an array"),
            }
        }
    }

    fn hex4(&mut self) -> Result<u32, ParseError> {
        let Some(h) = self.s.get(self.pos..self.pos + 4) else {
            return self.fail("truncated \\u escape");
        };
        // Exactly four hex digits: `u32::from_str_radix` alone would also take a sign ("+041").
        if !h.iter().all(u8::is_ascii_hexdigit) {
            return self.fail("invalid \\u escape");
        }
        let v = h.iter().fold(0u32, |acc, &d| acc * 16 + (d as char).to_digit(16).unwrap_or(0));
        self.pos += 4;
        Ok(v)
    }

    fn string(&mut self) -> Result<String, ParseError> {
        self.pos += 1; // opening quote
        let mut out = String::new();
        loop {
            // Copy the run of plain characters in one go; the input is known to be UTF-8.
            let start = self.pos;
            while let Some(&b) = self.s.get(self.pos) {
                if b == b'"' || b == b'\\' || b < 0x20 {
                    break;
                }
                self.pos += 1;
            }
            out.push_str(&self.text[start..self.pos]);
            match self.s.get(self.pos) {
                None => return self.fail("unterminated string"),
                Some(b'"') => {
                    self.pos += 1;
                    return Ok(out);
                }
                Some(b'\\') => {
                    self.pos += 1;
                    let Some(&e) = self.s.get(self.pos) else {
                        return self.fail("unterminated string");
                    };
                    self.pos += 1;
                    match e {
                        b'"' => out.push('"'),
                        b'\\' => out.push('\\'),
                        b'/' => out.push('/'),
                        b'b' => out.push('\u{8}'),
                        b'f' => out.push('\u{c}'),
                        b'n' => out.push('\n'),
                        b'r' => out.push('\r'),
                        b't' => out.push('\t'),
                        b'u' => {
                            let hi = self.hex4()?;
                            let c = if (0xD800..0xDC00).contains(&hi) {
                                if self.s.get(self.pos..self.pos + 2) != Some(b"\\u") {
                                    return self.fail("lone UTF-16 surrogate in a \\u escape");
                                }
                                self.pos += 2;
                                let lo = self.hex4()?;
                                if !(0xDC00..0xE000).contains(&lo) {
                                    return self.fail("lone UTF-16 surrogate in a \\u escape");
                                }
                                0x10000 + ((hi - 0xD800) << 10) + (lo - 0xDC00)
                            } else if (0xDC00..0xE000).contains(&hi) {
                                return self.fail("lone UTF-16 surrogate in a \\u escape");
                            } else {
                                hi
                            };
                            // Every value reachable here is a valid scalar value.
                            out.push(char::from_u32(c).unwrap_or('\u{fffd}'));
                        }
                        _ => return self.fail("invalid escape in a string"),
                    }
                }
                Some(_) => return self.fail("unescaped control character in a string"),
            }
        }
    }

    fn number(&mut self) -> Result<Value, ParseError> {
        let start = self.pos;
        if self.s.get(self.pos) == Some(&b'-') {
            self.pos += 1;
        }
        let int_start = self.pos;
        let digits = |p: &mut Self| {
            let s = p.pos;
            while let Some(b'0'..=b'9') = p.s.get(p.pos) {
                p.pos += 1;
            }
            p.pos - s
        };
        let n = digits(self);
        if n == 0 {
            return self.fail("expected digits in a number");
        }
        if n > 1 && self.s[int_start] == b'0' {
            return self.fail("leading zeros are not allowed in a number");
        }
        let mut is_float = false;
        if self.s.get(self.pos) == Some(&b'.') {
            self.pos += 1;
            is_float = true;
            if digits(self) == 0 {
                return self.fail("expected digits after the decimal point");
            }
        }
        if let Some(b'e' | b'E') = self.s.get(self.pos) {
            self.pos += 1;
            is_float = true;
            if let Some(b'+' | b'-') = self.s.get(self.pos) {
                self.pos += 1;
            }
            if digits(self) == 0 {
                return self.fail("expected digits in an exponent");
            }
        }
        let lit = &self.text[start..self.pos];
        if !is_float {
            // Python reads "-0" as the integer 0.
            let lit = if lit == "-0" { "0" } else { lit };
            return Ok(Value::Number(Number::Int(lit.to_owned())));
        }
        match lit.parse::<f64>() {
            Ok(f) if f.is_finite() => Ok(Value::Number(Number::Float(f))),
            _ => err(format!("number {lit} is out of range for a double")),
        }
    }
}

fn write_canonical(out: &mut String, v: &Value) {
    match v {
        Value::Null => out.push_str("null"),
        Value::Bool(true) => out.push_str("true"),
        Value::Bool(false) => out.push_str("false"),
        Value::Number(Number::Int(digits)) => out.push_str(digits),
        Value::Number(Number::Float(f)) => write_python_float(out, *f),
        Value::String(s) => write_string(out, s),
        Value::Array(items) => {
            out.push('[');
            for (i, item) in items.iter().enumerate() {
                if i > 0 {
                    out.push(',');
                }
                write_canonical(out, item);
            }
            out.push(']');
        }
        Value::Object(o) => {
            out.push('{');
            for (i, (k, v)) in o.0.iter().enumerate() {
                if i > 0 {
                    out.push(',');
                }
                write_string(out, k);
                out.push(':');
                write_canonical(out, v);
            }
            out.push('}');
        }
    }
}

/// Python's `json.dumps(..., ensure_ascii=False)` string escaping: only `"`, `\` and the C0
/// controls are escaped; everything else, including DEL, `/` and U+2028, is written raw.
fn write_string(out: &mut String, s: &str) {
    out.push('"');
    let mut start = 0;
    for (i, c) in s.char_indices() {
        let esc = match c {
            '"' => "\\\"",
            '\\' => "\\\\",
            '\n' => "\\n",
            '\r' => "\\r",
            '\t' => "\\t",
            '\u{8}' => "\\b",
            '\u{c}' => "\\f",
            c if (c as u32) < 0x20 => "",
            _ => continue,
        };
        out.push_str(&s[start..i]);
        if esc.is_empty() {
            let _ = write!(out, "\\u{:04x}", c as u32);
        } else {
            out.push_str(esc);
        }
        start = i + c.len_utf8();
    }
    out.push_str(&s[start..]);
    out.push('"');
}

/// Python's `float.__repr__`: the shortest digits that round-trip, in positional form when the
/// decimal exponent is in -4..16 (with a trailing `.0` for integral values), otherwise in
/// exponent form with a sign and at least two exponent digits (`1e-05`, `1e+16`).
pub fn write_python_float(out: &mut String, f: f64) {
    if f == 0.0 {
        out.push_str(if f.is_sign_negative() { "-0.0" } else { "0.0" });
        return;
    }
    // Rust's `{:e}` gives the same shortest round-trip digits as Python's repr.
    let sci = format!("{f:e}");
    let (mantissa, exp) = sci.split_once('e').unwrap_or((&sci, "0"));
    let exp: i32 = exp.parse().unwrap_or(0);
    let (neg, mantissa) = match mantissa.strip_prefix('-') {
        Some(m) => (true, m),
        None => (false, mantissa),
    };
    let digits: String = mantissa.chars().filter(|c| *c != '.').collect();
    if neg {
        out.push('-');
    }
    if !(-4..16).contains(&exp) {
        out.push_str(&digits[..1]);
        if digits.len() > 1 {
            out.push('.');
            out.push_str(&digits[1..]);
        }
        let _ = write!(out, "e{}{:02}", if exp < 0 { '-' } else { '+' }, exp.abs());
    } else if exp >= 0 {
        let int_len = exp as usize + 1;
        if digits.len() <= int_len {
            out.push_str(&digits);
            out.extend(std::iter::repeat_n('0', int_len - digits.len()));
            out.push_str(".0");
        } else {
            out.push_str(&digits[..int_len]);
            out.push('.');
            out.push_str(&digits[int_len..]);
        }
    } else {
        out.push_str("0.");
        out.extend(std::iter::repeat_n('0', (-exp - 1) as usize));
        out.push_str(&digits);
    }
}

#[cfg(test)]
mod tests;
