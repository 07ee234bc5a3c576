"""The capacity planner behind `fastkrb bench` and benches/: the planner (scenarios, sizing, report), the
load generator and the driver of a real sidecar, and the MIT krb5 baseline. Never imported by the daemon."""
