//! Nothing here: the tests are in `tests/` (a property test against a
//! sequential model, and the `metrics` exporter's tests). A crate of its
//! own so that proptest and metrics-util are not dev-dependencies of the
//! library.
