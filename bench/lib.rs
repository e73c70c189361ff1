//! Nothing here: the benches are in `benches/`, the peer adapters they
//! share in `benches/common/`. A crate of its own so that the peers and
//! criterion are not dev-dependencies of the library.
