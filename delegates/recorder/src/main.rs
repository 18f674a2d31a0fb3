//! The recording CNI delegate (work in progress).
fn main() {}
