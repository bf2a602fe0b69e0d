//! Rows of text cells rendered for people and for spreadsheets: the aligned columns that
//! `vephys status`, `vephys models` and `vephys results` print, and the CSV of
//! `vephys results --format csv`.

pub(crate) fn print_table(header: &[&str], lines: &[Vec<String>]) {
    print!("{}", table_text(header, lines));
}

/// Left-aligned columns two spaces apart, one line per row after the header.
pub(crate) fn table_text(header: &[&str], lines: &[Vec<String>]) -> String {
    let mut widths: Vec<usize> = header.iter().map(|h| h.len()).collect();
    for line in lines {
        for (w, cell) in widths.iter_mut().zip(line) {
            *w = (*w).max(cell.chars().count());
        }
    }
    let render = |cells: Vec<&str>| {
        let padded: Vec<String> = cells
            .iter()
            .zip(&widths)
            .map(|(c, w)| format!("{c:<w$}"))
            .collect();
        padded.join("  ").trim_end().to_string() + "\n"
    };
    let mut out = render(header.to_vec());
    for line in lines {
        out.push_str(&render(line.iter().map(String::as_str).collect()));
    }
    out
}

pub(crate) fn csv_text(header: &[&str], lines: &[Vec<String>]) -> String {
    let mut out = csv_line(header.iter().copied()) + "\n";
    for line in lines {
        out.push_str(&csv_line(line.iter().map(String::as_str)));
        out.push('\n');
    }
    out
}

/// One CSV record (RFC 4180 quoting: derived JSON cells contain commas and quotes).
fn csv_line<'a>(cells: impl Iterator<Item = &'a str>) -> String {
    let quoted: Vec<String> = cells
        .map(|cell| {
            if cell.contains([',', '"', '\n']) {
                format!("\"{}\"", cell.replace('"', "\"\""))
            } else {
                cell.to_string()
            }
        })
        .collect();
    quoted.join(",")
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn csv_quotes_cells_with_commas_and_quotes() {
        assert_eq!(
            csv_line(["a", "{\"x\":1,\"y\":2}"].into_iter()),
            "a,\"{\"\"x\"\":1,\"\"y\"\":2}\""
        );
    }
}
