//! Typed tables and their export forms: CSV (RFC 4180), JSON (an array of objects) and Parquet
//! (one file, uncompressed pages, nullable columns), so a table goes straight into pandas,
//! polars or R. The results browser exports the layer table it shows; `vephys results` its job
//! and point rows.

use std::io::{self, Write};
use std::sync::Arc;

use parquet::basic::{ConvertedType, LogicalType, Repetition, Type as Physical};
use parquet::data_type::{ByteArray, ByteArrayType, DoubleType, Int64Type};
use parquet::file::properties::WriterProperties;
use parquet::file::writer::SerializedFileWriter;
use parquet::schema::types::Type;
use serde_json::{Map, Value};

/// What a column holds. A column's cells may also be null.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Kind {
    Int,
    Float,
    Text,
}

/// One value of a table.
#[derive(Debug, Clone, PartialEq)]
pub enum Cell {
    Null,
    Int(i64),
    Float(f64),
    Text(String),
}

impl Cell {
    pub fn is_null(&self) -> bool {
        matches!(self, Cell::Null)
    }

    /// The cell as a number: integers and floats; None for text and null.
    pub fn as_f64(&self) -> Option<f64> {
        match self {
            Cell::Int(i) => Some(*i as f64),
            Cell::Float(f) => Some(*f),
            _ => None,
        }
    }

    pub fn as_str(&self) -> Option<&str> {
        match self {
            Cell::Text(s) => Some(s),
            _ => None,
        }
    }

    /// The kind this cell needs from its column; None for null, which fits any.
    fn kind(&self) -> Option<Kind> {
        match self {
            Cell::Null => None,
            Cell::Int(_) => Some(Kind::Int),
            Cell::Float(_) => Some(Kind::Float),
            Cell::Text(_) => Some(Kind::Text),
        }
    }

    /// The cell as plain text: shortest round-trip numbers, empty for null and non-finite.
    pub fn text(&self) -> String {
        match self {
            Cell::Null => String::new(),
            Cell::Int(i) => i.to_string(),
            Cell::Float(f) if f.is_finite() => f.to_string(),
            Cell::Float(_) => String::new(),
            Cell::Text(s) => s.clone(),
        }
    }

    pub fn json(&self) -> Value {
        match self {
            Cell::Null => Value::Null,
            Cell::Int(i) => Value::from(*i),
            Cell::Float(f) => serde_json::Number::from_f64(*f).map_or(Value::Null, Value::Number),
            Cell::Text(s) => Value::from(s.as_str()),
        }
    }
}

#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Column {
    pub name: String,
    pub kind: Kind,
}

impl Column {
    pub fn new(name: impl Into<String>, kind: Kind) -> Column {
        Column {
            name: name.into(),
            kind,
        }
    }
}

/// Rows of cells under named, typed columns; every row has one cell per column.
#[derive(Debug, Clone, Default, PartialEq)]
pub struct Table {
    pub columns: Vec<Column>,
    pub rows: Vec<Vec<Cell>>,
}

/// The kind that holds both: integers widen to floats, anything mixed with text is text.
fn widen(a: Kind, b: Kind) -> Kind {
    match (a, b) {
        (x, y) if x == y => x,
        (Kind::Text, _) | (_, Kind::Text) => Kind::Text,
        _ => Kind::Float,
    }
}

/// Rows per Parquet row group: readers stream a group at a time.
const ROW_GROUP: usize = 65_536;

impl Table {
    pub fn new(columns: Vec<Column>) -> Table {
        Table {
            columns,
            rows: Vec::new(),
        }
    }

    /// Appends a row; a short row is padded with nulls, a long one cut to the columns.
    pub fn push(&mut self, mut row: Vec<Cell>) {
        row.resize(self.columns.len(), Cell::Null);
        self.rows.push(row);
    }

    /// Each column's kind widened to hold every cell it has (an integer column holding a
    /// float becomes a float column), so no export loses or misplaces a value.
    pub fn kinds(&self) -> Vec<Kind> {
        self.columns
            .iter()
            .enumerate()
            .map(|(i, c)| {
                self.rows
                    .iter()
                    .filter_map(|r| r.get(i).and_then(Cell::kind))
                    .fold(c.kind, widen)
            })
            .collect()
    }

    /// CSV with a header line; null cells are empty, text is quoted where it must be.
    pub fn write_csv(&self, out: &mut impl Write) -> io::Result<()> {
        let header: Vec<String> = self.columns.iter().map(|c| csv_cell(&c.name)).collect();
        writeln!(out, "{}", header.join(","))?;
        for row in &self.rows {
            let cells: Vec<String> = row.iter().map(|c| csv_cell(&c.text())).collect();
            writeln!(out, "{}", cells.join(","))?;
        }
        Ok(())
    }

    pub fn to_csv(&self) -> String {
        let mut out = Vec::new();
        self.write_csv(&mut out).expect("writing to memory");
        String::from_utf8(out).expect("cells are strings")
    }

    /// An array with one object per row, keyed by column name.
    pub fn to_json(&self) -> Value {
        Value::Array(
            self.rows
                .iter()
                .map(|row| {
                    let mut object = Map::new();
                    for (c, cell) in self.columns.iter().zip(row) {
                        object.insert(c.name.clone(), cell.json());
                    }
                    Value::Object(object)
                })
                .collect(),
        )
    }

    /// One Parquet file: every column optional (null where a cell is null), integers as INT64,
    /// floats as DOUBLE, text as UTF-8 strings; pages uncompressed.
    pub fn write_parquet<W: Write + Send>(&self, out: W) -> parquet::errors::Result<()> {
        let kinds = self.kinds();
        let mut fields = Vec::with_capacity(self.columns.len());
        for (c, kind) in self.columns.iter().zip(&kinds) {
            let builder = match kind {
                Kind::Int => Type::primitive_type_builder(&c.name, Physical::INT64),
                Kind::Float => Type::primitive_type_builder(&c.name, Physical::DOUBLE),
                Kind::Text => Type::primitive_type_builder(&c.name, Physical::BYTE_ARRAY)
                    .with_logical_type(Some(LogicalType::String))
                    .with_converted_type(ConvertedType::UTF8),
            };
            fields.push(Arc::new(
                builder.with_repetition(Repetition::OPTIONAL).build()?,
            ));
        }
        let schema = Arc::new(
            Type::group_type_builder("vephys")
                .with_fields(fields)
                .build()?,
        );
        let props = Arc::new(
            WriterProperties::builder()
                .set_created_by(format!("vephys {}", env!("CARGO_PKG_VERSION")))
                .build(),
        );
        let mut writer = SerializedFileWriter::new(out, schema, props)?;
        for rows in self.rows.chunks(ROW_GROUP) {
            let mut group = writer.next_row_group()?;
            let mut i = 0;
            while let Some(mut column) = group.next_column()? {
                let cells = rows.iter().map(|r| r.get(i).unwrap_or(&Cell::Null));
                let defs: Vec<i16> = cells.clone().map(|c| i16::from(!c.is_null())).collect();
                match kinds[i] {
                    Kind::Int => {
                        let values: Vec<i64> = cells
                            .filter_map(|c| match c {
                                Cell::Int(v) => Some(*v),
                                _ => None,
                            })
                            .collect();
                        column
                            .typed::<Int64Type>()
                            .write_batch(&values, Some(&defs), None)?;
                    }
                    Kind::Float => {
                        let values: Vec<f64> = cells.filter_map(Cell::as_f64).collect();
                        column
                            .typed::<DoubleType>()
                            .write_batch(&values, Some(&defs), None)?;
                    }
                    Kind::Text => {
                        let values: Vec<ByteArray> = cells
                            .filter(|c| !c.is_null())
                            .map(|c| ByteArray::from(c.text().into_bytes()))
                            .collect();
                        column
                            .typed::<ByteArrayType>()
                            .write_batch(&values, Some(&defs), None)?;
                    }
                }
                column.close()?;
                i += 1;
            }
            group.close()?;
        }
        writer.close()?;
        Ok(())
    }

    pub fn to_parquet(&self) -> parquet::errors::Result<Vec<u8>> {
        let mut out = Vec::new();
        self.write_parquet(&mut out)?;
        Ok(out)
    }
}

/// One CSV field (RFC 4180: fields with commas, quotes or line breaks are quoted).
pub fn csv_cell(cell: &str) -> String {
    if cell.contains([',', '"', '\n', '\r']) {
        format!("\"{}\"", cell.replace('"', "\"\""))
    } else {
        cell.to_string()
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use parquet::file::reader::{FileReader, SerializedFileReader};
    use parquet::record::Field;

    fn sample() -> Table {
        let mut t = Table::new(vec![
            Column::new("filter", Kind::Int),
            Column::new("csi", Kind::Float),
            Column::new("status", Kind::Text),
        ]);
        t.push(vec![
            Cell::Int(0),
            Cell::Float(0.25),
            Cell::Text("ok".into()),
        ]);
        t.push(vec![Cell::Int(1), Cell::Null, Cell::Text("a,\"b\"".into())]);
        t.push(vec![Cell::Int(2), Cell::Int(3)]);
        t
    }

    #[test]
    fn csv_quotes_and_leaves_nulls_empty() {
        assert_eq!(
            sample().to_csv(),
            "filter,csi,status\n0,0.25,ok\n1,,\"a,\"\"b\"\"\"\n2,3,\n"
        );
    }

    #[test]
    fn json_is_one_object_per_row() {
        let v = sample().to_json();
        assert_eq!(v[0]["csi"], 0.25);
        assert!(v[1]["csi"].is_null());
        assert_eq!(v[2]["filter"], 2);
    }

    #[test]
    fn kinds_widen_to_hold_every_cell() {
        assert_eq!(sample().kinds(), vec![Kind::Int, Kind::Float, Kind::Text]);
        let mut t = Table::new(vec![Column::new("x", Kind::Int)]);
        t.push(vec![Cell::Float(1.5)]);
        assert_eq!(t.kinds(), vec![Kind::Float]);
    }

    #[test]
    fn parquet_round_trips_with_nulls() {
        let bytes = sample().to_parquet().unwrap();
        assert_eq!(&bytes[..4], b"PAR1");
        let reader = SerializedFileReader::new(bytes::Bytes::from(bytes)).unwrap();
        let meta = reader.metadata().file_metadata();
        assert_eq!(meta.num_rows(), 3);
        let schema = meta.schema_descr();
        let names: Vec<&str> = schema.columns().iter().map(|c| c.name()).collect();
        assert_eq!(names, vec!["filter", "csi", "status"]);
        let rows: Vec<Vec<Field>> = reader
            .get_row_iter(None)
            .unwrap()
            .map(|r| {
                r.unwrap()
                    .get_column_iter()
                    .map(|(_, f)| f.clone())
                    .collect()
            })
            .collect();
        assert_eq!(rows[0][0], Field::Long(0));
        assert_eq!(rows[0][1], Field::Double(0.25));
        assert_eq!(rows[0][2], Field::Str("ok".into()));
        assert_eq!(rows[1][1], Field::Null);
        assert_eq!(rows[2][1], Field::Double(3.0));
        assert_eq!(rows[2][2], Field::Null);
    }

    #[test]
    fn an_empty_table_is_a_valid_parquet_file() {
        let t = Table::new(vec![Column::new("filter", Kind::Int)]);
        let bytes = t.to_parquet().unwrap();
        let reader = SerializedFileReader::new(bytes::Bytes::from(bytes)).unwrap();
        assert_eq!(reader.metadata().file_metadata().num_rows(), 0);
    }
}
