//! vephys results as people see them, shared by the CLI's static report (`vephys report`,
//! `vephys local`) and the coordinator's results browser, so both draw the same thing:
//!
//! - [`units`]: one summary row per unit (the `unit_summary` view's rules) and the text table;
//! - [`plots`]: one figure per probe result, derived numbers as captions;
//! - [`svg`]: the line and bar plots themselves;
//! - [`record`]: a job's result as JSON (numbers, provenance, points, artifacts);
//! - [`table`]: typed tables and their CSV, JSON and Parquet forms;
//! - [`fmt`]: escaping, numbers, dates, file-name slugs.
//!
//! Nothing here links libtorch or touches a database: input is what `QueryResults` streams
//! (`JobResult`, docs/results.md) or rows the caller read.

pub mod fmt;
pub mod plots;
pub mod record;
pub mod svg;
pub mod table;
pub mod units;
