//! Static HTML reports: one self-contained `index.html` per comparison (or experiment), with
//! no JavaScript, no network access and no external files except the plots beside it.
//!
//! - [`write_compare_index`]: the report of `downhill compare` — the command that reproduces
//!   it, the overlay plots, a results table and links to every run folder's plots,
//!   `config.json` and `metrics.csv`.
//! - [`Page`], [`Section`], [`Table`], [`Image`], [`Verdict`]: the builder the experiments
//!   report reuses. A section is the unit of an experiment write-up: a title, the claim being
//!   tested, figures, tables, a verdict and the command that regenerates it.
//!
//! Every piece of text is HTML-escaped; image sources and links are relative paths, so a
//! report folder can be moved, zipped or served as is.
//!
//! | file | what lives there |
//! |---|---|
//! | `html.rs` | the builder: [`Page`], [`Section`], [`Table`], [`Cell`], [`Image`], [`Verdict`], [`escape`] |
//! | `compare.rs` | the page of `downhill compare` ([`compare_page`]) |
//! | `landscape.rs` | the page of `downhill landscape` ([`landscape_page`]) and its section on the report ([`landscape_section`]) |
//! | `index.rs` | the page of `downhill report` ([`index_page`]) |

mod compare;
mod html;
mod index;
mod landscape;

pub use compare::{compare_page, write_compare_index};
pub use html::{escape, Cell, Image, Outcome, Page, Section, Table, Verdict, INDEX_FILE};
pub use index::{failed_section, index_page, relocate, Timing};
pub use landscape::{landscape_page, landscape_section};
