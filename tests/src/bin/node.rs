//! The node binary, built in this package so integration tests can start it as real
//! processes (`CARGO_BIN_EXE_xmcredit-node-under-test`).

fn main() -> anyhow::Result<()> {
    xmcredit_node::cli::main_with_args(std::env::args_os())
}
