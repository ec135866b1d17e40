//! The sans-IO coordination core. Reads no clock, no file, no OS randomness.
