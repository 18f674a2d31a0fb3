//! CNI specification types (spec 0.1.0 to 1.1.0): pure data and conversions, no I/O.
