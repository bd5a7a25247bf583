//! The node binary: everything lives in the library (`xmcredit_node::cli`).

fn main() -> anyhow::Result<()> {
    xmcredit_node::cli::main_with_args(std::env::args_os())
}
