//! Which test runs each component `components/` builds, one line each, as the component's
//! constant naming a test function: a built component missing here, or a line whose test was
//! renamed or removed, does not compile (`components.rs` checks every built component through
//! `built::foreach_component!`).

pub(crate) use crate::conformance::idempotency_is_checked_the_way_the_profile_says_the_provider_achieves_it as MESSAGING_TELEGRAM;
pub(crate) use crate::conformance::messaging_webhook_passes_every_case as MESSAGING_WEBHOOK;
pub(crate) use crate::conformance::the_broken_provider_fails_exactly_the_cases_of_its_flaw as BROKEN;
pub(crate) use crate::conformance::timer_heartbeat_passes_every_case_fired_by_the_host as TIMER_HEARTBEAT;
pub(crate) use crate::conformance::webhook_github_passes_every_case as WEBHOOK_GITHUB;
pub(crate) use crate::events::a_nats_sink_publishes_each_tenants_events_on_its_own_subject as EVENTS;
pub(crate) use crate::fleet::fuel_per_second_holds_across_the_fleet_within_the_documented_bound as WORKLOADS;
pub(crate) use crate::hostile::outgoing_requests_in_flight_are_capped_per_call as HOSTILE;
pub(crate) use crate::ingress::a_flood_of_unsigned_deliveries_leaves_the_tenants_calls_served as SLOW_REFUSER;
pub(crate) use crate::instances::a_tenants_later_calls_run_in_its_instance_and_no_instance_serves_two_tenants as REMEMBER;
pub(crate) use crate::registry_cli::a_bundle_and_its_layout_verify_wherever_they_are_copied_and_tags_stay_apart as NOOP;
pub(crate) use crate::run::the_benchmark_http_handler_answers_through_the_host as HTTP_HELLO;
pub(crate) use crate::run::two_tenants_are_isolated_and_limits_contain_hostile_guests as ECHO;
pub(crate) use crate::run::two_tenants_are_isolated_and_limits_contain_hostile_guests as INFINITE_LOOP;
pub(crate) use crate::run::two_tenants_are_isolated_and_limits_contain_hostile_guests as MEMORY_GROWER;
pub(crate) use crate::run::two_tenants_are_isolated_and_limits_contain_hostile_guests as RECURSION;
pub(crate) use crate::run::two_tenants_are_isolated_and_limits_contain_hostile_guests as UNDECLARED_SECRET;
pub(crate) use crate::run::two_tenants_are_isolated_and_limits_contain_hostile_guests as PANICKER;
