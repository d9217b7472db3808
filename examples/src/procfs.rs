//! Memory figures of a process from `/proc/<pid>/status`, for the benchmarks' one-line reports.

/// A `/proc/<pid>/status` field in kB (`"VmRSS"`, `"VmHWM"`), in MiB; `pid` `"self"` is this
/// process. NaN when the file or the field cannot be read, so that a report still prints.
pub fn status_mib(pid: &str, field: &str) -> f64 {
    std::fs::read_to_string(format!("/proc/{pid}/status"))
        .unwrap_or_default()
        .lines()
        .find_map(|l| l.strip_prefix(field)?.strip_prefix(':'))
        .and_then(|v| v.trim().trim_end_matches("kB").trim().parse::<f64>().ok())
        .map_or(f64::NAN, |kb| kb / 1024.0)
}

#[cfg(test)]
mod tests {
    #[test]
    fn reads_this_process_and_refuses_what_is_not_there() {
        let rss = super::status_mib("self", "VmRSS");
        assert!(rss > 0.0, "{rss}");
        assert!(super::status_mib("self", "NoSuchField").is_nan());
        assert!(super::status_mib("0", "VmRSS").is_nan());
    }
}
