//! The machine's context: what every state shares. Owns: this device's identity and
//! own record (the only file it writes), the peer views, the timer table, the seeded rng,
//! the effect queue, terms and start hints, and "report once" memory for bad files.
//! Writing our record and its answers are in `writes.rs`; folding observations into
//! peer views in `ingest.rs`. A fact only one state has lives in that state
//! (`machine/`), not here. Must never: decide a role change (that is `machine/`), read a
//! clock or a file.

mod ctx;
mod ingest;
mod writes;

pub(crate) use ctx::PendingRequest;
pub use ctx::{CoreConfig, Ctx};
pub use ingest::OwnFileNews;
pub use writes::WriteNews;
