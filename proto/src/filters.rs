//! Which filters (channels) of a layer to run: one grammar for every tool, campaign spec and
//! variable (`--filters`, `VEPHYS_FILTERS`, `filters = ...`):
//!
//! - `all`: every filter of the layer;
//! - `7`: one filter;
//! - `0-15`: an inclusive range (filters 0 to 15);
//! - `0..16`: a half-open range (the same filters, Rust's and Python's spelling);
//! - any of these separated by commas: `0-15,40,64..128`.
//!
//! Both range spellings are accepted everywhere: they cannot be mistaken for each other (a
//! filter index is never negative), and people arrive with either habit. The selection is the
//! sorted set of the filters named; naming one twice is harmless. In a TOML spec `filters` is
//! such a string or a list of indices and strings (`[0, "4-7", "10..20"]`).

use std::fmt;

use serde::{Deserialize, Serialize};

use crate::params::{MAX_CHANNELS, MAX_FILTER_ITEMS};

/// A filter selection as written: checked for its grammar when parsed, resolved against a
/// layer's channel count by [`Filters::resolve`].
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[serde(untagged)]
pub enum Filters {
    One(FilterItem),
    Many(Vec<FilterItem>),
}

impl Default for Filters {
    fn default() -> Self {
        Filters::One(FilterItem::Text("all".into()))
    }
}

#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[serde(untagged)]
pub enum FilterItem {
    Index(i64),
    /// `all`, `7`, `a-b` or `a..b`, or several of them separated by commas.
    Text(String),
}

/// How to write a selection, for error messages.
pub const GRAMMAR: &str =
    "write `all`, an index, an inclusive range `0-15` or a half-open range `0..16`, separated by commas";

/// One part of a selection: a half-open range of filters, or all of them.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum Part {
    All,
    Range(i64, i64),
}

impl Filters {
    /// Parses a selection (`0-15,40`, `0..16`, `all`), checking its grammar.
    pub fn parse(text: &str) -> Result<Filters, String> {
        let filters = Filters::One(FilterItem::Text(text.to_string()));
        filters.parts()?;
        Ok(filters)
    }

    /// Checks the grammar alone (the layer's size is not known yet).
    pub fn check(&self) -> Result<(), String> {
        self.parts().map(|_| ())
    }

    /// The sorted, deduplicated filter indices for a layer with `channels` channels.
    pub fn resolve(&self, channels: i64) -> Result<Vec<i64>, String> {
        let mut selected = Vec::new();
        for part in self.parts()? {
            let (start, end) = match part {
                Part::All => (0, channels),
                Part::Range(start, end) => (start, end),
            };
            if end > channels {
                let named = match end - start {
                    1 => format!("filter {start}"),
                    _ => format!("filters {start}-{}", end - 1),
                };
                return Err(format!(
                    "{named} out of range for a layer of {channels} filters; use 0-{} (or 0..{channels})",
                    channels - 1
                ));
            }
            selected.extend(start..end);
        }
        selected.sort_unstable();
        selected.dedup();
        Ok(selected)
    }

    fn parts(&self) -> Result<Vec<Part>, String> {
        let items: &[FilterItem] = match self {
            Filters::One(item) => std::slice::from_ref(item),
            Filters::Many(items) => items,
        };
        let mut parts = Vec::new();
        for item in items {
            match item {
                FilterItem::Index(i) if *i < 0 => {
                    return Err(format!("filter {i} is negative; {GRAMMAR}"))
                }
                FilterItem::Index(i) if *i >= MAX_CHANNELS => return Err(too_large(*i)),
                FilterItem::Index(i) => parts.push(Part::Range(*i, i + 1)),
                FilterItem::Text(text) => {
                    for piece in text.split(',') {
                        parts.push(part(piece)?);
                        if parts.len() > MAX_FILTER_ITEMS {
                            break;
                        }
                    }
                }
            }
            if parts.len() > MAX_FILTER_ITEMS {
                return Err(format!(
                    "more than {MAX_FILTER_ITEMS} indices and ranges; use ranges such as 0-1023"
                ));
            }
        }
        if parts.is_empty() {
            return Err(format!("no filters selected; {GRAMMAR}"));
        }
        Ok(parts)
    }
}

impl fmt::Display for Filters {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        let items: &[FilterItem] = match self {
            Filters::One(item) => std::slice::from_ref(item),
            Filters::Many(items) => items,
        };
        let text: Vec<String> = items
            .iter()
            .map(|i| match i {
                FilterItem::Index(i) => i.to_string(),
                FilterItem::Text(t) => t.trim().to_string(),
            })
            .collect();
        f.write_str(&text.join(","))
    }
}

fn part(piece: &str) -> Result<Part, String> {
    let text = piece.trim();
    if text.eq_ignore_ascii_case("all") {
        return Ok(Part::All);
    }
    let bad = |why: &str| Err(format!("`{text}` {why}; {GRAMMAR}"));
    if text.is_empty() {
        return bad("is empty");
    }
    let index = |s: &str| s.trim().parse::<i64>().ok().filter(|i| *i >= 0);
    // The largest index a layer can have, so that `end` below cannot overflow.
    if let Some(big) = text
        .split(['-', '.'])
        .filter_map(index)
        .find(|i| *i > MAX_CHANNELS)
    {
        return Err(too_large(big));
    }
    let (start, end) = if let Some((a, b)) = text.split_once("..") {
        match (index(a), index(b)) {
            (Some(a), Some(b)) => (a, b),
            _ => return bad("is not a range of filter indices"),
        }
    } else if let Some((a, b)) = text.split_once('-') {
        match (index(a), index(b)) {
            (Some(a), Some(b)) => (a, b + 1),
            _ => return bad("is not a range of filter indices"),
        }
    } else {
        match index(text) {
            Some(i) => (i, i + 1),
            None => return bad("is not a filter index"),
        }
    };
    if start >= end {
        return bad("is an empty range (its end comes before its start)");
    }
    Ok(Part::Range(start, end))
}

fn too_large(index: i64) -> String {
    format!(
        "filter {index} is beyond the largest layer vephys takes ({MAX_CHANNELS} filters); use indices below {MAX_CHANNELS}"
    )
}

#[cfg(test)]
mod tests {
    use super::*;

    fn resolve(text: &str, channels: i64) -> Result<Vec<i64>, String> {
        Filters::parse(text)?.resolve(channels)
    }

    #[test]
    fn both_range_spellings_mean_the_same_filters() {
        assert_eq!(resolve("0-3", 10).unwrap(), vec![0, 1, 2, 3]);
        assert_eq!(resolve("0..4", 10).unwrap(), vec![0, 1, 2, 3]);
        assert_eq!(resolve("7, 0-2,1..3", 10).unwrap(), vec![0, 1, 2, 7]);
        assert_eq!(resolve("all", 3).unwrap(), vec![0, 1, 2]);
        assert_eq!(resolve("ALL,1", 2).unwrap(), vec![0, 1]);
        assert_eq!(resolve("5", 6).unwrap(), vec![5]);
    }

    #[test]
    fn a_toml_list_mixes_indices_and_ranges() {
        let list = Filters::Many(vec![
            FilterItem::Index(5),
            FilterItem::Text("0..2".into()),
            FilterItem::Text("8-9".into()),
        ]);
        assert_eq!(list.resolve(10).unwrap(), vec![0, 1, 5, 8, 9]);
        assert_eq!(list.to_string(), "5,0..2,8-9");
        assert_eq!(Filters::default().resolve(2).unwrap(), vec![0, 1]);
    }

    #[test]
    fn bad_selections_say_how_to_write_one() {
        for text in [
            "", "a", "3-1", "3..3", "1,,2", "-1", "1-", "..4", "1.5", "0-2-4", " , ",
        ] {
            let err = resolve(text, 10).unwrap_err();
            assert!(
                err.contains("0..16") && err.contains("0-15"),
                "{text:?}: {err}"
            );
        }
        assert!(Filters::Many(vec![]).resolve(3).is_err());
        assert!(Filters::Many(vec![FilterItem::Index(-2)])
            .resolve(3)
            .is_err());
    }

    #[test]
    fn out_of_range_names_the_valid_range_in_both_spellings() {
        let err = resolve("0-10", 10).unwrap_err();
        assert!(err.contains("filters 0-10 out of range"), "{err}");
        assert!(err.contains("0-9") && err.contains("0..10"), "{err}");
        let err = resolve("12", 10).unwrap_err();
        assert!(err.contains("filter 12 out of range"), "{err}");
    }
}
