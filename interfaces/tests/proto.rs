//! `proto/greentic.proto` is what the WIT contracts give: the wire contract of remote providers
//! cannot drift from the WIT one.

use std::path::Path;

#[test]
fn the_committed_wire_contract_is_what_the_wit_gives() {
    let contracts = greentic_interfaces::Contracts::embedded().unwrap();
    let generated = greentic_interfaces::proto::generate(contracts).unwrap();
    let path = Path::new(env!("CARGO_MANIFEST_DIR"))
        .join("..")
        .join(greentic_interfaces::proto::PATH);
    if std::env::var_os("GREENTIC_WRITE_PROTO").is_some() {
        std::fs::write(&path, &generated).unwrap();
    }
    let committed = std::fs::read_to_string(&path).unwrap_or_default();
    assert!(
        committed == generated,
        "{} differs from what wit/ gives; regenerate it with `GREENTIC_WRITE_PROTO=1 cargo test -p greentic-interfaces --test proto` and review the diff",
        path.display()
    );
    // What the remote form relies on is there.
    for needle in [
        "rpc Describe(DescribeRequest) returns (DescribeResponse);",
        "rpc MessagingSend(MessagingSendRequest) returns (MessagingSendResponse);",
        "rpc TimerOnFire(TimerOnFireRequest) returns (TimerOnFireResponse);",
        "rpc SecretsGet(SecretsGetRequest) returns (SecretsGetResponse);",
        "rpc StateCompareAndSwap(",
        "message TypesTenantCtx {",
    ] {
        assert!(generated.contains(needle), "no `{needle}`:\n{generated}");
    }
}
