//! What a layer view shows, as URL parameters: `sort` (a column of `unit_summary`), `dir`
//! (`asc` | `desc`), `q` (a filter), `page`, `per` and `view` (`grid` | `table`). The same
//! parameters select the rows of the downloads and the order of a unit's previous/next links.
//!
//! A filter is conditions joined by `,` or `and`, each `column op value` with op one of
//! `< <= > >= = !=` (e.g. `color_selectivity > 0.3, preferred_rotation = 90`), `column is null`,
//! `column is not null`, or a bare filter index or range (`12`, `10..20`). Columns are the
//! view's, found at run time; spaces in a name stand for `_`; a trailing `°` is ignored. A
//! comparison with a missing value is false, as in SQL.

use std::cmp::Ordering;

use vephys_results::table::{Cell, Kind};

use super::cache::LayerTable;
use super::html::query_string;

pub const DEFAULT_PER: usize = 120;
pub const MAX_PER: usize = 1000;

#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum View {
    Grid,
    Table,
}

#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Params {
    pub sort: String,
    pub desc: bool,
    pub q: String,
    /// 1-based.
    pub page: usize,
    pub per: usize,
    pub view: View,
}

impl Default for Params {
    fn default() -> Self {
        Params {
            sort: "filter".into(),
            desc: false,
            q: String::new(),
            page: 1,
            per: DEFAULT_PER,
            view: View::Grid,
        }
    }
}

impl Params {
    /// Reads the parameters of a query string; anything unreadable keeps its default.
    pub fn parse(query: Option<&str>) -> Params {
        let mut p = Params::default();
        for (k, v) in form_urlencoded::parse(query.unwrap_or("").as_bytes()) {
            match k.as_ref() {
                "sort" if !v.trim().is_empty() => p.sort = v.trim().to_string(),
                "dir" => p.desc = v == "desc",
                "q" => p.q = v.trim().to_string(),
                "page" => p.page = v.parse().unwrap_or(1).max(1),
                "per" => p.per = v.parse().unwrap_or(DEFAULT_PER).clamp(1, MAX_PER),
                "view" => {
                    p.view = if v == "table" {
                        View::Table
                    } else {
                        View::Grid
                    }
                }
                _ => {}
            }
        }
        p
    }

    /// The order and filter only (what a unit page carries for its previous/next links).
    pub fn context(&self) -> String {
        query_string(&self.context_pairs())
    }

    fn context_pairs(&self) -> Vec<(&'static str, String)> {
        let d = Params::default();
        let mut pairs = Vec::new();
        if self.sort != d.sort {
            pairs.push(("sort", self.sort.clone()));
        }
        if self.desc {
            pairs.push(("dir", "desc".into()));
        }
        pairs.push(("q", self.q.clone()));
        pairs
    }

    /// Every parameter that differs from its default.
    pub fn to_query(&self) -> String {
        let d = Params::default();
        let mut pairs = self.context_pairs();
        if self.view == View::Table {
            pairs.push(("view", "table".into()));
        }
        if self.per != d.per {
            pairs.push(("per", self.per.to_string()));
        }
        if self.page != 1 {
            pairs.push(("page", self.page.to_string()));
        }
        query_string(&pairs)
    }
}

#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum Op {
    Lt,
    Le,
    Gt,
    Ge,
    Eq,
    Ne,
}

#[derive(Debug, Clone, PartialEq)]
enum Value {
    Num(f64),
    Text(String),
    Null,
}

#[derive(Debug, Clone, PartialEq)]
struct Condition {
    column: usize,
    op: Op,
    value: Value,
}

/// `colour selectivity` → `colour_selectivity`.
fn normalize(name: &str) -> String {
    name.trim()
        .to_lowercase()
        .split_whitespace()
        .collect::<Vec<_>>()
        .join("_")
}

fn column_of(t: &LayerTable, name: &str) -> Result<usize, String> {
    let wanted = normalize(name);
    t.shown
        .iter()
        .copied()
        .find(|&i| t.table.columns[i].name.to_lowercase() == wanted)
        .ok_or_else(|| {
            let names: Vec<&str> = t
                .shown
                .iter()
                .map(|&i| t.table.columns[i].name.as_str())
                .collect();
            format!(
                "unknown column `{}`; the columns are {}",
                name.trim(),
                names.join(", ")
            )
        })
}

fn parse_number(text: &str) -> Option<f64> {
    let t = text.trim().trim_end_matches('°').trim();
    t.parse::<f64>().ok().filter(|v| v.is_finite())
}

/// Splits on `,`, `;` and the word `and`.
fn clauses(expr: &str) -> Vec<String> {
    let mut out = Vec::new();
    for part in expr.split([',', ';']) {
        let mut current: Vec<&str> = Vec::new();
        for word in part.split_whitespace() {
            if word.eq_ignore_ascii_case("and") || word == "&&" {
                out.push(current.join(" "));
                current.clear();
            } else {
                current.push(word);
            }
        }
        out.push(current.join(" "));
    }
    out.retain(|c| !c.trim().is_empty());
    out
}

fn parse_filter(t: &LayerTable, expr: &str) -> Result<Vec<Condition>, String> {
    let mut out = Vec::new();
    for clause in clauses(expr) {
        let c = clause.trim();
        // a bare filter index or half-open range
        if let Some(v) = parse_number(c) {
            out.push(Condition {
                column: t.filter_col,
                op: Op::Eq,
                value: Value::Num(v),
            });
            continue;
        }
        if let Some((a, b)) = c.split_once("..") {
            if let (Some(a), Some(b)) = (parse_number(a), parse_number(b)) {
                out.push(Condition {
                    column: t.filter_col,
                    op: Op::Ge,
                    value: Value::Num(a),
                });
                out.push(Condition {
                    column: t.filter_col,
                    op: Op::Lt,
                    value: Value::Num(b),
                });
                continue;
            }
        }
        let lower = c.to_lowercase();
        if let Some(name) = lower.strip_suffix(" is not null") {
            out.push(Condition {
                column: column_of(t, name)?,
                op: Op::Ne,
                value: Value::Null,
            });
            continue;
        }
        if let Some(name) = lower.strip_suffix(" is null") {
            out.push(Condition {
                column: column_of(t, name)?,
                op: Op::Eq,
                value: Value::Null,
            });
            continue;
        }
        // the first operator in the clause; two-character ones win at the same place
        let ops = [
            ("<=", Op::Le),
            (">=", Op::Ge),
            ("!=", Op::Ne),
            ("==", Op::Eq),
            ("<", Op::Lt),
            (">", Op::Gt),
            ("=", Op::Eq),
        ];
        let found = ops
            .iter()
            .filter_map(|(s, op)| c.find(s).map(|at| (at, s.len(), *op)))
            .min_by_key(|(at, len, _)| (*at, usize::MAX - len));
        let Some((at, len, op)) = found else {
            return Err(format!(
                "cannot read `{c}`: write conditions like `color_selectivity > 0.3`, \
                 `synthesis_status = ok`, `preferred_rotation is null` or a filter index such as `12`"
            ));
        };
        let (name, value) = (&c[..at], c[at + len..].trim());
        let column = column_of(t, name)?;
        let kind = t.table.columns[column].kind;
        let value = if matches!(value.to_lowercase().as_str(), "null" | "none" | "-" | "–") {
            if !matches!(op, Op::Eq | Op::Ne) {
                return Err(format!("`{c}`: only = and != compare with null"));
            }
            Value::Null
        } else if kind == Kind::Text {
            Value::Text(value.trim_matches(['"', '\'']).to_string())
        } else {
            match parse_number(value) {
                Some(v) => Value::Num(v),
                None => {
                    return Err(format!(
                        "`{c}`: `{}` holds numbers and `{value}` is not one",
                        t.table.columns[column].name
                    ))
                }
            }
        };
        out.push(Condition { column, op, value });
    }
    Ok(out)
}

fn close(a: f64, b: f64) -> bool {
    (a - b).abs() <= 1e-9 * a.abs().max(b.abs()).max(1.0)
}

fn matches(cell: &Cell, c: &Condition) -> bool {
    match (&c.value, cell) {
        (Value::Null, cell) => match c.op {
            Op::Eq => cell.is_null(),
            Op::Ne => !cell.is_null(),
            _ => false,
        },
        (_, Cell::Null) => false,
        (Value::Num(v), cell) => {
            let Some(x) = cell.as_f64() else { return false };
            match c.op {
                Op::Lt => x < *v && !close(x, *v),
                Op::Le => x <= *v || close(x, *v),
                Op::Gt => x > *v && !close(x, *v),
                Op::Ge => x >= *v || close(x, *v),
                Op::Eq => close(x, *v),
                Op::Ne => !close(x, *v),
            }
        }
        (Value::Text(v), cell) => {
            let x = cell.text();
            let o = x.as_str().cmp(v.as_str());
            match c.op {
                Op::Lt => o == Ordering::Less,
                Op::Le => o != Ordering::Greater,
                Op::Gt => o == Ordering::Greater,
                Op::Ge => o != Ordering::Less,
                Op::Eq => o == Ordering::Equal,
                Op::Ne => o != Ordering::Equal,
            }
        }
    }
}

/// Missing values go last in either direction.
fn compare(a: &Cell, b: &Cell, desc: bool) -> Ordering {
    let o = match (a, b) {
        (Cell::Null, Cell::Null) => return Ordering::Equal,
        (Cell::Null, _) => return Ordering::Greater,
        (_, Cell::Null) => return Ordering::Less,
        (Cell::Text(x), Cell::Text(y)) => x.cmp(y),
        _ => match (a.as_f64(), b.as_f64()) {
            (Some(x), Some(y)) => x.total_cmp(&y),
            (Some(_), None) => Ordering::Less,
            (None, Some(_)) => Ordering::Greater,
            (None, None) => a.text().cmp(&b.text()),
        },
    };
    if desc {
        o.reverse()
    } else {
        o
    }
}

/// The rows (indices into the layer's table) the parameters select, in their order; ties go
/// by filter index.
pub fn select(t: &LayerTable, p: &Params) -> Result<Vec<usize>, String> {
    let sort = column_of(t, &p.sort).map_err(|e| format!("cannot sort: {e}"))?;
    let conditions = parse_filter(t, &p.q)?;
    let mut rows: Vec<usize> = (0..t.table.rows.len())
        .filter(|&r| {
            conditions
                .iter()
                .all(|c| matches(&t.table.rows[r][c.column], c))
        })
        .collect();
    rows.sort_by(|&a, &b| {
        compare(&t.table.rows[a][sort], &t.table.rows[b][sort], p.desc)
            .then_with(|| t.filter_of(a).cmp(&t.filter_of(b)))
    });
    Ok(rows)
}

/// The sort column's index, when it exists.
pub fn sort_column(t: &LayerTable, p: &Params) -> Option<usize> {
    column_of(t, &p.sort).ok()
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn params_round_trip_through_the_url() {
        let p = Params::parse(Some(
            "sort=color_selectivity&dir=desc&q=color_selectivity%20%3E%200.3&page=2&per=50&view=table",
        ));
        assert_eq!(p.sort, "color_selectivity");
        assert!(p.desc);
        assert_eq!(p.q, "color_selectivity > 0.3");
        assert_eq!((p.page, p.per, p.view), (2, 50, View::Table));
        assert_eq!(Params::parse(Some(&p.to_query())), p);
        assert_eq!(Params::parse(None), Params::default());
        assert_eq!(Params::default().to_query(), "");
        assert_eq!(Params::parse(Some("per=0&page=-3")).per, 1);
    }

    #[test]
    fn clauses_split_on_commas_and_and() {
        assert_eq!(
            clauses("a > 1 and b < 2, c = ok;d is null"),
            vec!["a > 1", "b < 2", "c = ok", "d is null"]
        );
    }
}
