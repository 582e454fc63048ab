//! wk-runtime-wasm: the wasmtime host that runs pods of WASI P2 components.
//!
//! Not implemented yet: this crate is a placeholder in the workspace layout, filled by the
//! runtime-wasm issue. It exports nothing.
