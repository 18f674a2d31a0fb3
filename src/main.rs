//! The `plexus` CNI binary: a thin entry over the library.
fn main() {}
