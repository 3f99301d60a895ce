//! A console result set: typed columns, text rows, written as RowDescription, DataRows and CommandComplete.

use bytes::BytesMut;

use crate::protocol::backend::{self, Column};

/// The column types PgBouncer's console uses.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Type {
    Text,
    Int4,
    Int8,
    Numeric,
}

impl Type {
    fn oid_and_size(self) -> (u32, i16) {
        match self {
            Self::Text => (25, -1),
            Self::Int4 => (23, 4),
            Self::Int8 => (20, 8),
            Self::Numeric => (1700, -1),
        }
    }
}

/// One value in text form; `None` is NULL.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Cell(pub Option<String>);

impl From<&str> for Cell {
    fn from(s: &str) -> Self {
        Self(Some(s.to_owned()))
    }
}

impl From<String> for Cell {
    fn from(s: String) -> Self {
        Self(Some(s))
    }
}

impl From<Option<String>> for Cell {
    fn from(s: Option<String>) -> Self {
        Self(s)
    }
}

impl From<Option<&str>> for Cell {
    fn from(s: Option<&str>) -> Self {
        Self(s.map(str::to_owned))
    }
}

macro_rules! cell_from_number {
    ($($t:ty),*) => { $( impl From<$t> for Cell {
        fn from(n: $t) -> Self {
            Self(Some(n.to_string()))
        }
    } )* };
}
cell_from_number!(u16, u32, u64, i64, usize, u128);

/// Builds a row from values of mixed types: `row![name, 5u32, None::<String>]`.
macro_rules! row {
    ($($v:expr),* $(,)?) => { vec![$($crate::admin::result::Cell::from($v)),*] };
}
pub(crate) use row;

/// Columns and rows of one answer.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct ResultSet {
    pub columns: Vec<(&'static str, Type)>,
    pub rows: Vec<Vec<Cell>>,
}

impl ResultSet {
    pub fn new(columns: &[(&'static str, Type)]) -> Self {
        Self {
            columns: columns.to_vec(),
            rows: Vec::new(),
        }
    }

    /// Adds a row; it must have one value per column.
    pub fn push(&mut self, row: Vec<Cell>) {
        debug_assert_eq!(row.len(), self.columns.len(), "row width");
        self.rows.push(row);
    }

    /// RowDescription, one DataRow per row, CommandComplete `SHOW`.
    pub fn write(&self, buf: &mut BytesMut) {
        let columns: Vec<Column<'_>> = self
            .columns
            .iter()
            .map(|(name, ty)| {
                let (type_oid, type_size) = ty.oid_and_size();
                Column {
                    name,
                    type_oid,
                    type_size,
                }
            })
            .collect();
        backend::write_row_description(buf, &columns);
        for row in &self.rows {
            let values: Vec<Option<&str>> = row.iter().map(|c| c.0.as_deref()).collect();
            backend::write_data_row(buf, &values);
        }
        backend::write_command_complete(buf, "SHOW");
    }

    /// The column names, for tests.
    #[cfg(test)]
    pub fn names(&self) -> Vec<&'static str> {
        self.columns.iter().map(|(n, _)| *n).collect()
    }
}
