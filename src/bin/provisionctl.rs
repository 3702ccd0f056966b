//! provisionctl: validate, diff and apply provision policy files, and operate a provisiond.
//! Everything lives in `provisiond::cli`; this only hands over the exit code.

fn main() -> std::process::ExitCode {
    provisiond::cli::main()
}
