//! What the call routes need beyond the store: the pipeline (agents, tenants' scripts), the
//! carriers' REST APIs, the Exotel webhook credentials, and the cache of tenants' scripts
//! loaded for calls (by script version and hash, so a script is parsed and its prompts set up
//! once however many calls run it).

use std::collections::{BTreeMap, HashMap};
use std::sync::Arc;

use dashmap::DashMap;

use super::dial::Carriers;
use super::error::ApiError;
use crate::call::CallId;
use crate::call::agent::AgentFactory;
use crate::call::registry::{ExpectedCall, OutboundPlan, Registry};
use crate::metrics::Metrics;
use crate::pipeline::{Pipeline, TenantScriptError};
use crate::script::prompts::LoadedScript;
use crate::store::catalog::ScriptVersion;
use crate::store::hub::EventHub;
use crate::store::tenants::Plan;
use crate::store::{Scope, Store, TenantId};

/// The call routes' dependencies.
pub struct CallPlane {
    /// The agents and the loader of tenants' scripts.
    pub pipeline: Arc<Pipeline>,
    /// The carriers' REST APIs.
    pub carriers: Arc<dyn Carriers>,
    /// `KEY:TOKEN` Basic credentials Exotel's webhooks must carry; `None` refuses them.
    pub exotel_credentials: Option<String>,
    /// Live CallEvents by call (the writer publishes the session's; the control plane its own).
    pub hub: EventHub,
    /// Where webhook outcomes are counted.
    pub metrics: Option<Metrics>,
    scripts: DashMap<String, Arc<LoadedScript>>,
}

/// The agent a call runs, resolved.
#[derive(Clone)]
pub struct ResolvedAgent {
    /// Its name in the record (`script:<name>`, `llm`, `echo`).
    pub agent: String,
    /// The tenant script version, when it runs one.
    pub script_id: Option<String>,
    /// The factory for a tenant's script (catalog agents have none).
    pub factory: Option<AgentFactory>,
}

impl CallPlane {
    /// A plane over `pipeline` and `carriers`.
    pub fn new(
        pipeline: Arc<Pipeline>,
        carriers: Arc<dyn Carriers>,
        exotel_credentials: Option<String>,
        hub: EventHub,
    ) -> Self {
        CallPlane {
            pipeline,
            carriers,
            exotel_credentials,
            hub,
            metrics: None,
            scripts: DashMap::new(),
        }
    }

    /// The same plane, counting webhook outcomes in `metrics`.
    pub fn with_metrics(mut self, metrics: Metrics) -> Self {
        self.metrics = Some(metrics);
        self
    }

    /// The catalog agent `name` (`llm`, `echo`, `script:<file>`), or 422 `unknown_agent`.
    pub fn catalog_agent(&self, name: &str) -> Result<ResolvedAgent, ApiError> {
        let names = self.pipeline.agents.names();
        if !names.iter().any(|n| n == name) {
            return Err(ApiError::unprocessable(
                "unknown_agent",
                format!(
                    "no agent {name:?} on this gateway (agents: {})",
                    names.join(", ")
                ),
            ));
        }
        Ok(ResolvedAgent {
            agent: name.to_owned(),
            script_id: None,
            factory: None,
        })
    }

    /// The latest version of `tenant`'s script `name`, loaded for calls (cached by version
    /// and hash), checked against `variables` (422 `missing_variables` naming them).
    pub async fn tenant_script(
        &self,
        store: &Store,
        tenant: TenantId,
        name: &str,
        variables: &BTreeMap<String, String>,
    ) -> Result<ResolvedAgent, ApiError> {
        let (agent, script) = self.tenant_script_loaded(store, tenant, name).await?;
        let mut vars: HashMap<String, String> = script.defaults.clone();
        vars.extend(variables.iter().map(|(k, v)| (k.clone(), v.clone())));
        if let Err(missing) = script.flow.check_variables(&vars) {
            return Err(ApiError::unprocessable(
                "missing_variables",
                missing.to_string(),
            ));
        }
        Ok(agent)
    }

    /// The latest version of `tenant`'s script `name`, loaded for calls (cached), with the
    /// loaded script itself (its flow and default variables), for callers that check many
    /// sets of variables against it (422 `unknown_script` / `script_unusable`).
    pub async fn tenant_script_loaded(
        &self,
        store: &Store,
        tenant: TenantId,
        name: &str,
    ) -> Result<(ResolvedAgent, Arc<LoadedScript>), ApiError> {
        let version = store
            .latest_script(Scope::Tenant(tenant), name)
            .await?
            .ok_or_else(|| {
                ApiError::unprocessable(
                    "unknown_script",
                    format!("the tenant has no script {name:?}"),
                )
            })?;
        let script = self.load(&version)?;
        let agent = ResolvedAgent {
            agent: format!("script:{name}"),
            script_id: Some(version.id.to_string()),
            factory: Some(crate::script::script_agent_factory(script.clone())),
        };
        Ok((agent, script))
    }

    /// Renders and synthesizes ahead every prompt the latest version of `tenant`'s script
    /// `name` speaks with `variables` (the script's defaults under them), so a dialled call
    /// greets on answer without waiting for speech synthesis. 422 `missing_variables` or
    /// `unknown_script` like [`CallPlane::tenant_script`]; 503 `prompts_unavailable` when a
    /// prompt cannot be synthesized now.
    pub async fn prepare_tenant_script(
        &self,
        store: &Store,
        tenant: TenantId,
        name: &str,
        variables: &BTreeMap<String, String>,
    ) -> Result<(), ApiError> {
        let version = store
            .latest_script(Scope::Tenant(tenant), name)
            .await?
            .ok_or_else(|| {
                ApiError::unprocessable(
                    "unknown_script",
                    format!("the tenant has no script {name:?}"),
                )
            })?;
        let script = self.load(&version)?;
        let vars: HashMap<String, String> = variables
            .iter()
            .map(|(k, v)| (k.clone(), v.clone()))
            .collect();
        match crate::script::prepare::prepare_script(&script, &vars).await {
            Ok(_) => Ok(()),
            Err(crate::script::prepare::PrepareError::Missing(missing)) => Err(
                ApiError::unprocessable("missing_variables", missing.to_string()),
            ),
            Err(error) => Err(ApiError::unavailable(
                "prompts_unavailable",
                error.to_string(),
            )),
        }
    }

    fn load(&self, version: &ScriptVersion) -> Result<Arc<LoadedScript>, ApiError> {
        let key = format!("{}:{}", version.id, version.hash);
        if let Some(script) = self.scripts.get(&key) {
            return Ok(script.clone());
        }
        let script = self
            .pipeline
            .load_tenant_script(&version.name, &version.source)
            .map_err(|e| match e {
                TenantScriptError::NoVoice => {
                    ApiError::unavailable("scripts_unavailable", e.to_string())
                }
                other => ApiError::unprocessable("script_unusable", other.to_string()),
            })?;
        self.scripts.insert(key, script.clone());
        Ok(script)
    }

    /// Registers `call_id` with this gateway's registry, so the stream naming it is served
    /// by `agent` with `variables`.
    pub fn expect(
        &self,
        registry: &Registry,
        call_id: CallId,
        tenant: TenantId,
        agent: &ResolvedAgent,
        variables: &BTreeMap<String, String>,
    ) {
        let mut expected = ExpectedCall::new(call_id, agent.agent.clone());
        expected.tenant_id = Some(tenant.to_string());
        expected.factory = agent.factory.clone();
        expected.variables = variables.clone();
        registry.expect(&call_id.to_string(), expected);
    }

    /// [`CallPlane::expect`] for an outbound call that starts with `plan` (answering-machine
    /// detection, a voicemail message).
    pub fn expect_outbound(
        &self,
        registry: &Registry,
        call_id: CallId,
        tenant: TenantId,
        agent: &ResolvedAgent,
        variables: &BTreeMap<String, String>,
        plan: OutboundPlan,
    ) {
        let mut expected = ExpectedCall::new(call_id, agent.agent.clone());
        expected.tenant_id = Some(tenant.to_string());
        expected.factory = agent.factory.clone();
        expected.variables = variables.clone();
        expected.outbound = Some(plan);
        registry.expect(&call_id.to_string(), expected);
    }
}

/// `template` (a voicemail message with `{{ variable }}` slots) filled with `variables`; 422
/// `invalid_voicemail_message` when it does not parse, `missing_variables` naming a variable
/// it needs and the call lacks.
pub fn render_voicemail(
    template: &str,
    variables: &BTreeMap<String, String>,
) -> Result<String, ApiError> {
    let parsed = crate::script::parse_template(template).map_err(|message| {
        ApiError::unprocessable(
            "invalid_voicemail_message",
            format!("`voicemail_message`: {message}"),
        )
    })?;
    let vars: HashMap<String, String> = variables
        .iter()
        .map(|(k, v)| (k.clone(), v.clone()))
        .collect();
    parsed.render(&vars).map_err(|missing| {
        ApiError::unprocessable(
            "missing_variables",
            format!(
                "`voicemail_message` needs the variable {:?}, which the call does not have",
                missing.name
            ),
        )
    })
}

/// Whether `plan` lets a tenant place calls.
pub fn plan_dials(plan: Plan) -> bool {
    matches!(plan, Plan::Outbound | Plan::Full)
}

/// Whether `plan` lets a tenant receive calls.
pub fn plan_answers(plan: Plan) -> bool {
    matches!(plan, Plan::Inbound | Plan::Full)
}

/// The plan of `tenant` (404 when it does not exist).
pub async fn tenant_plan(store: &Store, tenant: TenantId) -> Result<Plan, ApiError> {
    store
        .list_tenants(Scope::Tenant(tenant))
        .await?
        .into_iter()
        .next()
        .map(|t| t.plan)
        .ok_or_else(|| ApiError::not_found("tenant"))
}

/// Finds calls created on another gateway instance in the store (see
/// [`crate::call::directory`]): a call not yet over gets its agent and variables as stored.
pub struct StoreDirectory {
    /// The store.
    pub store: Store,
    /// The agents and tenants' scripts.
    pub plane: Arc<CallPlane>,
}

impl StoreDirectory {
    /// The plan of a campaign call, rebuilt from its campaign (`None`: not a campaign call, or
    /// the campaign runs no machine detection). A voicemail message that cannot be rendered
    /// is left out (the call hangs up on machines) and logged.
    async fn campaign_plan(
        &self,
        id: CallId,
        variables: &BTreeMap<String, String>,
    ) -> Option<OutboundPlan> {
        let setup = match self.store.campaign_call_plan(id).await {
            Ok(setup) => setup?,
            Err(error) => {
                tracing::warn!(call_id = %id, %error, "call directory: reading the campaign failed");
                return None;
            }
        };
        setup.machine_detection.as_ref()?;
        let message = setup.voicemail_message.and_then(|template| {
            render_voicemail(&template, variables)
                .map_err(|error| {
                    tracing::warn!(call_id = %id, message = %error.message,
                        "call directory: the campaign's voicemail message cannot be rendered")
                })
                .ok()
        });
        Some(OutboundPlan::detect(message))
    }
}

#[async_trait::async_trait]
impl crate::call::directory::CallDirectory for StoreDirectory {
    async fn resolve(&self, call_id: &str) -> Option<ExpectedCall> {
        let id = CallId(uuid::Uuid::parse_str(call_id).ok()?);
        let call = match self.store.get_call(Scope::Super, id).await {
            Ok(Some(call)) if !call.status.is_final() => call,
            Ok(_) => return None,
            Err(error) => {
                tracing::warn!(%call_id, %error, "call directory: reading the call failed");
                return None;
            }
        };
        let resolved = match call.agent.strip_prefix("script:") {
            Some(name) if call.script_id.is_some() => {
                self.plane
                    .tenant_script(&self.store, call.tenant_id, name, &call.variables)
                    .await
            }
            _ => self.plane.catalog_agent(&call.agent),
        };
        match resolved {
            Ok(agent) => {
                let mut expected = ExpectedCall::new(id, agent.agent);
                expected.tenant_id = Some(call.tenant_id.to_string());
                expected.factory = agent.factory;
                expected.outbound = self.campaign_plan(id, &call.variables).await;
                expected.variables = call.variables;
                Some(expected)
            }
            Err(error) => {
                tracing::warn!(%call_id, code = error.code, message = %error.message,
                    "call directory: the call's agent cannot run here");
                None
            }
        }
    }
}
