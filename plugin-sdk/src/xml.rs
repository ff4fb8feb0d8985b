//! Reading the XML answers of cloud APIs (S3, EC2, STS, Azure Storage list their services in
//! XML), feature `xml`. Two questions cover discovery: the text at a path
//! ([`text`]), and the repeated elements of a listing with their fields ([`records`]).
//!
//! Paths are element local names (namespace prefixes dropped) joined with `/`, and match as a
//! suffix of the full path: `"Buckets/Bucket"` matches `ListAllMyBucketsResult/Buckets/Bucket`.
//! Entities and CDATA are decoded. A streaming reader keeps memory near the answer's size.

use quick_xml::Reader;
use quick_xml::events::Event;

/// One element of a listing: the texts of its descendants, by path relative to it, in document
/// order (repeated elements appear repeatedly).
#[derive(Debug, Clone, PartialEq, Eq, Default)]
pub struct Fields(pub Vec<(String, String)>);

impl Fields {
    /// The first text at `path` (relative: `"Name"`, `"placement/availabilityZone"`).
    pub fn get(&self, path: &str) -> Option<&str> {
        self.0.iter().find(|(p, _)| p == path).map(|(_, v)| v.as_str())
    }

    /// Every text at `path`.
    pub fn all<'a>(&'a self, path: &'a str) -> impl Iterator<Item = &'a str> + 'a {
        self.0.iter().filter(move |(p, _)| p == path).map(|(_, v)| v.as_str())
    }
}

fn ends_with_path(stack: &[String], suffix: &str) -> bool {
    let parts: Vec<&str> = suffix.split('/').collect();
    stack.len() >= parts.len() && stack[stack.len() - parts.len()..].iter().zip(&parts).all(|(a, b)| a == b)
}

/// What [`walk`] reports.
enum At<'a> {
    /// An element starts (it is on top of the stack).
    Start,
    /// Text inside the element on top of the stack.
    Text(&'a str),
    /// The element on top of the stack ends.
    End,
}

/// Walk the document, calling `on` with the element stack at each start, text and end.
fn walk(xml: &str, mut on: impl FnMut(&[String], At<'_>)) -> Result<(), String> {
    let mut reader = Reader::from_str(xml);
    let mut stack: Vec<String> = Vec::new();
    let bad = |e: &dyn std::fmt::Display, at: u64| format!("malformed XML at byte {at}: {e}");
    loop {
        let at = reader.buffer_position();
        match reader.read_event().map_err(|e| bad(&e, at))? {
            Event::Start(e) => {
                stack.push(String::from_utf8_lossy(e.local_name().as_ref()).into_owned());
                on(&stack, At::Start);
            }
            Event::Empty(e) => {
                stack.push(String::from_utf8_lossy(e.local_name().as_ref()).into_owned());
                on(&stack, At::Start);
                on(&stack, At::Text(""));
                on(&stack, At::End);
                stack.pop();
            }
            Event::End(_) => {
                on(&stack, At::End);
                stack.pop();
            }
            Event::Text(t) => {
                let text = t.unescape().map_err(|e| bad(&e, at))?;
                if !text.trim().is_empty() {
                    on(&stack, At::Text(&text));
                }
            }
            Event::CData(c) => on(&stack, At::Text(&String::from_utf8_lossy(&c))),
            Event::Eof => break,
            _ => {}
        }
    }
    if stack.is_empty() {
        Ok(())
    } else {
        Err(format!("malformed XML: `{}` is never closed", stack.join("/")))
    }
}

/// The text of the first element whose path ends with `path`, if there is one.
pub fn text(xml: &str, path: &str) -> Result<Option<String>, String> {
    let mut found = None;
    walk(xml, |stack, at| {
        if let At::Text(text) = at
            && found.is_none()
            && ends_with_path(stack, path)
        {
            found = Some(text.to_owned());
        }
    })?;
    Ok(found)
}

/// Every element whose path ends with `record` (not nested in another such element), with the
/// texts of its descendants.
pub fn records(xml: &str, record: &str) -> Result<Vec<Fields>, String> {
    let mut out = Vec::new();
    // The depth of the open record element and its fields so far.
    let mut open: Option<(usize, Fields)> = None;
    walk(xml, |stack, at| match (&mut open, at) {
        (None, At::Start) if ends_with_path(stack, record) => open = Some((stack.len(), Fields::default())),
        (None, _) => {}
        (Some((depth, fields)), At::Text(t)) => fields.0.push((stack[*depth..].join("/"), t.to_owned())),
        (Some((depth, _)), At::End) if stack.len() == *depth => {
            if let Some((_, fields)) = open.take() {
                out.push(fields);
            }
        }
        (Some(_), _) => {}
    })?;
    Ok(out)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn records_and_texts_come_out_decoded_with_relative_paths() {
        let xml = r#"<?xml version="1.0"?>
<r:Result xmlns:r="urn:x"><Owner><ID>me</ID></Owner>
  <Items>
    <Item><Name>a &amp; b</Name><Place><Zone>z1</Zone></Place><Tags><item>t1</item><item>t2</item></Tags></Item>
    <Item><Name><![CDATA[c<d]]></Name><Empty/></Item>
  </Items><Next>tok</Next></r:Result>"#;
        let items = records(xml, "Items/Item").unwrap();
        assert_eq!(items.len(), 2);
        assert_eq!(items[0].get("Name"), Some("a & b"));
        assert_eq!(items[0].get("Place/Zone"), Some("z1"));
        assert_eq!(items[0].all("Tags/item").collect::<Vec<_>>(), ["t1", "t2"]);
        assert_eq!(items[1].get("Name"), Some("c<d"));
        assert_eq!(items[1].get("Empty"), Some(""));
        assert_eq!(text(xml, "Next").unwrap().as_deref(), Some("tok"));
        assert_eq!(text(xml, "Owner/ID").unwrap().as_deref(), Some("me"));
        assert_eq!(text(xml, "Missing").unwrap(), None);
    }

    #[test]
    fn malformed_documents_are_errors() {
        assert!(records("<a><b></a>", "b").is_err());
        assert!(text("<a><b>x</b>", "b").unwrap_err().contains("never closed"));
    }
}
