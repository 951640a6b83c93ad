//! The process table: every live process with its ancestry, kept exact from fork/exec/exit
//! and reconciled with the platform's live set.

mod table;

mod images;
pub mod resolve;

pub use images::{Image, Images};
pub use table::{ProcessTable, TableStats};
