//! The process table: every live process with its ancestry, kept exact from fork/exec/exit
//! and reconciled with the platform's live set.

mod table;

pub use table::{CurrentImages, ProcessTable, TableStats};
