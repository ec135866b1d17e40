//! The exhaustive check (filled in below).
