//! The `dfm` command line: parses the arguments and runs the command (`dfm::cli`).

use clap::Parser;
use std::process::ExitCode;

/// mimalloc keeps freed tensor buffers for reuse. With the system allocator every large tensor
/// of a training step was a fresh `mmap`, paid again in page faults and zeroing: mimalloc made
/// the quickstart's training step about 5% faster on flex (README "Performance").
#[global_allocator]
static GLOBAL: mimalloc::MiMalloc = mimalloc::MiMalloc;

fn main() -> ExitCode {
    // Rust ignores SIGPIPE, so printing to a closed pipe (`dfm data sample | head`) panicked;
    // with the default action the process ends quietly, as other Unix tools do.
    #[cfg(unix)]
    // SAFETY: set before any thread starts; SIG_DFL is a valid disposition for SIGPIPE.
    unsafe {
        libc::signal(libc::SIGPIPE, libc::SIG_DFL);
    }
    if std::env::var_os("XDG_RUNTIME_DIR").is_none() {
        // SAFETY: set before any thread starts.
        unsafe { std::env::set_var("XDG_RUNTIME_DIR", std::env::temp_dir()) };
    }
    tracing_subscriber::fmt()
        .with_env_filter(
            tracing_subscriber::EnvFilter::try_from_default_env().unwrap_or_else(|_| "warn".into()),
        )
        .with_writer(std::io::stderr)
        .init();
    match dfm::cli::run(dfm::cli::Cli::parse()) {
        Ok(()) => ExitCode::SUCCESS,
        Err(e) => {
            // A secret typed into a URL never reaches the terminal.
            eprintln!("error: {}", dfm::store::scrub(&format!("{e:#}")));
            ExitCode::FAILURE
        }
    }
}
