//! Which evaluator a case names: the common ones in `checks`, a domain's own in its module.

use crate::cases::{Case, Check};
use crate::checks;
use crate::ctx::Ctx;
use crate::domains;
use crate::verdict::{Verdict, fail};

/// Runs `case`: the common evaluators here, a domain's own in its module.
pub(crate) async fn evaluate(ctx: &mut Ctx, case: &Case) -> Verdict {
    ctx.begin(case);
    if !case.check.is_common() && !ctx.suite.checks.contains(&case.check) {
        return fail(format!(
            "`{:?}` cases do not apply to the {} domain",
            case.check, ctx.suite.name
        ));
    }
    let verdict = match case.check {
        Check::UpstreamAnswer => checks::upstream_answer(ctx, case).await,
        Check::Tenancy => checks::tenancy(ctx, case).await,
        Check::Instances => checks::instances(ctx, case).await,
        Check::Telemetry => checks::telemetry(ctx, case).await,
        Check::SecretsResolve => checks::secrets_resolve(ctx, case).await,
        Check::SecretsUnbound => checks::secrets_unbound(ctx, case).await,
        Check::SecretsNotEmitted => checks::secrets_not_emitted(ctx).await,
        Check::ManifestImports => checks::manifest_imports(ctx),
        Check::ManifestBehaviour => checks::manifest_behaviour(ctx),
        Check::Retry => domains::messaging::retry(ctx, case).await,
        Check::Idempotency => domains::messaging::idempotency(ctx, case).await,
        Check::Delivery => domains::webhook::delivery(ctx, case).await,
        Check::DeliveryReplay => domains::webhook::delivery_replay(ctx, case).await,
    };
    // Let spans and logs of the case's last call land before the next case starts.
    ctx.collect();
    verdict
}
