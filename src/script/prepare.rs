//! Preparing one call's prompts ahead of time: every prompt, reprompt and the `@goodbye`
//! rendered with the call's variables and synthesized before the call is dialed, so the call
//! never waits for the synthesizer. A variable the flow needs and the call lacks is an error
//! naming it (and the nodes that need it), so the call is refused before it is dialed.

use std::collections::HashMap;
use std::sync::Arc;

use async_trait::async_trait;
use futures::StreamExt;

use super::flow::Flow;
use super::prompts::{LoadedScript, PromptClip, PromptError, PromptSource};
use super::render::{MissingUse, MissingVariables};

/// Prompts synthesized at once while preparing a call.
const PREPARE_CONCURRENCY: usize = 4;

/// Why a call cannot be prepared.
#[derive(Debug, Clone, PartialEq, thiserror::Error)]
pub enum PrepareError {
    /// Variables the flow needs have no value.
    #[error(transparent)]
    Missing(#[from] MissingVariables),
    /// A prompt could not be synthesized.
    #[error("cannot prepare the prompt {text:?}: {error}")]
    Prompt {
        /// The rendered text.
        text: String,
        /// Why.
        error: PromptError,
    },
}

/// One call's prompts, rendered and synthesized: a [`PromptSource`] that answers from them
/// first and from the script's source for anything else.
#[derive(Clone)]
pub struct PreparedCall {
    base: Arc<dyn PromptSource>,
    clips: HashMap<String, PromptClip>,
    texts: Vec<String>,
}

impl std::fmt::Debug for PreparedCall {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("PreparedCall")
            .field("texts", &self.texts)
            .finish_non_exhaustive()
    }
}

impl PreparedCall {
    /// The rendered texts, distinct, in flow order (the `@goodbye` first).
    pub fn texts(&self) -> &[String] {
        &self.texts
    }

    /// The audio of one rendered text.
    pub fn clip(&self, text: &str) -> Option<PromptClip> {
        self.clips.get(text).cloned()
    }
}

#[async_trait]
impl PromptSource for PreparedCall {
    fn cached(&self, text: &str) -> Option<PromptClip> {
        self.clips
            .get(text)
            .cloned()
            .or_else(|| self.base.cached(text))
    }

    async fn synthesize(&self, text: &str) -> Result<PromptClip, PromptError> {
        match self.clips.get(text) {
            Some(clip) => Ok(clip.clone()),
            None => self.base.synthesize(text).await,
        }
    }
}

/// Renders every spoken text of `flow` with `vars` (the `@goodbye`, then each node's prompt
/// and reprompt), distinct and in that order.
pub fn render_spoken(
    flow: &Flow,
    vars: &HashMap<String, String>,
) -> Result<Vec<String>, MissingVariables> {
    flow.check_variables(vars)?;
    let mut templates = vec![(None, &flow.settings.goodbye)];
    for node in &flow.nodes {
        for template in [&node.prompt, &node.reprompt].into_iter().flatten() {
            templates.push((Some(node.name.as_str()), template));
        }
    }
    let mut texts: Vec<String> = Vec::new();
    for (node, template) in templates {
        let text = template.render(vars).map_err(|missing| MissingVariables {
            missing: vec![MissingUse {
                name: missing.name,
                needed_by: vec![node.unwrap_or("@goodbye").to_owned()],
            }],
        })?;
        if !text.is_empty() && !texts.contains(&text) {
            texts.push(text);
        }
    }
    Ok(texts)
}

/// Renders and synthesizes every spoken text of `flow` for one call with `vars`, through
/// `prompts` (which answers from memory what it already has).
pub async fn prepare(
    prompts: Arc<dyn PromptSource>,
    flow: &Flow,
    vars: &HashMap<String, String>,
) -> Result<PreparedCall, PrepareError> {
    let texts = render_spoken(flow, vars)?;
    let source = &prompts;
    let results: Vec<(String, Result<PromptClip, PromptError>)> =
        futures::stream::iter(texts.iter().cloned())
            .map(|text| async move {
                let clip = match source.cached(&text) {
                    Some(clip) => Ok(clip),
                    None => source.synthesize(&text).await,
                };
                (text, clip)
            })
            .buffer_unordered(PREPARE_CONCURRENCY)
            .collect()
            .await;
    let mut clips = HashMap::with_capacity(results.len());
    let mut errors = HashMap::new();
    for (text, result) in results {
        match result {
            Ok(clip) => {
                clips.insert(text, clip);
            }
            Err(error) => {
                errors.insert(text, error);
            }
        }
    }
    // Report the first failing text in flow order.
    if let Some(text) = texts.iter().find(|t| errors.contains_key(*t))
        && let Some(error) = errors.remove(text)
    {
        return Err(PrepareError::Prompt {
            text: text.clone(),
            error,
        });
    }
    Ok(PreparedCall {
        base: prompts,
        clips,
        texts,
    })
}

/// [`prepare`] for a loaded script: the script's default variables, overridden by the call's.
pub async fn prepare_script(
    script: &LoadedScript,
    call_vars: &HashMap<String, String>,
) -> Result<PreparedCall, PrepareError> {
    let mut vars = script.defaults.clone();
    vars.extend(call_vars.iter().map(|(k, v)| (k.clone(), v.clone())));
    prepare(script.prompts.clone(), &script.flow, &vars).await
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::script::parse;
    use crate::script::source::ScriptPrompts;
    use crate::script::synth::test_voice::TestTts;

    const SCRIPT: &str = r#"@goodbye Bye {{ firstName | friend }}.
[start]
Hi {{ firstName | there }}, this is {{ tenantName }}.
reprompt: Press 1 for {{ day }}.
-> 1: done
-> 2: sms "See you {{ smsOnly }}" then done

[done]
Thanks. Goodbye.
-> END
"#;

    fn vars(pairs: &[(&str, &str)]) -> HashMap<String, String> {
        pairs
            .iter()
            .map(|(k, v)| (k.to_string(), v.to_string()))
            .collect()
    }

    fn source(tts: &TestTts) -> Arc<dyn PromptSource> {
        let flow = parse(SCRIPT).unwrap().flow;
        Arc::new(ScriptPrompts::new(
            "v",
            crate::script::spoken::distinct_texts(&flow),
            Some(Arc::new(tts.clone())),
            None,
        ))
    }

    #[test]
    fn renders_every_spoken_text_once_in_flow_order() {
        let flow = parse(SCRIPT).unwrap().flow;
        let all = vars(&[("tenantName", "Acme"), ("day", "Monday"), ("smsOnly", "x")]);
        assert_eq!(
            render_spoken(&flow, &all).unwrap(),
            vec![
                "Bye friend.",
                "Hi there, this is Acme.",
                "Press 1 for Monday.",
                "Thanks. Goodbye.",
            ]
        );
    }

    #[tokio::test]
    async fn missing_variables_are_named_with_their_nodes_and_nothing_is_synthesized() {
        let tts = TestTts::default();
        let flow = parse(SCRIPT).unwrap().flow;
        let err = prepare(source(&tts), &flow, &vars(&[("day", " ")]))
            .await
            .unwrap_err();
        let PrepareError::Missing(missing) = &err else {
            panic!("{err:?}")
        };
        let names: Vec<&str> = missing.missing.iter().map(|m| m.name.as_str()).collect();
        assert_eq!(names, ["day", "smsOnly", "tenantName"]);
        let text = err.to_string();
        assert!(
            text.contains("`tenantName` (needed by start)") && text.contains("`day`"),
            "{text}"
        );
        assert!(tts.requests().is_empty());
    }

    #[tokio::test]
    async fn prepares_every_prompt_and_answers_from_them() {
        let tts = TestTts::default();
        let base = source(&tts);
        let flow = parse(SCRIPT).unwrap().flow;
        let call = vars(&[
            ("tenantName", "Acme"),
            ("day", "Monday"),
            ("smsOnly", "x"),
            ("firstName", "Ana"),
        ]);
        let prepared = prepare(base.clone(), &flow, &call).await.unwrap();
        assert_eq!(prepared.texts().len(), 4);
        let mut asked = tts.requests();
        asked.sort();
        assert_eq!(
            asked,
            [
                "Bye Ana.",
                "Hi Ana, this is Acme.",
                "Press 1 for Monday.",
                "Thanks. Goodbye."
            ]
        );
        for text in prepared.texts() {
            assert_eq!(
                prepared.cached(text).unwrap()[..],
                TestTts::pcm(text)[..],
                "{text}"
            );
        }
        // Anything else goes to the script's source.
        assert!(prepared.cached("Other.").is_none());
        assert!(prepared.synthesize("Other.").await.is_ok());
        // A second call with the same values synthesizes nothing new.
        prepare(base, &flow, &call).await.unwrap();
        assert_eq!(tts.requests().len(), 5);
    }

    #[tokio::test]
    async fn a_prompt_that_cannot_be_synthesized_fails_the_preparation() {
        let tts = TestTts::default();
        tts.fail_on("Hi there, this is Acme.");
        let flow = parse(SCRIPT).unwrap().flow;
        let call = vars(&[("tenantName", "Acme"), ("day", "Monday"), ("smsOnly", "x")]);
        let err = prepare(source(&tts), &flow, &call).await.unwrap_err();
        assert!(
            matches!(&err, PrepareError::Prompt { text, .. } if text == "Hi there, this is Acme."),
            "{err:?}"
        );
    }

    #[tokio::test]
    async fn prepare_script_merges_defaults_under_the_call_values() {
        let tts = TestTts::default();
        let parsed = parse(SCRIPT).unwrap();
        let script = LoadedScript {
            name: "t".into(),
            hash: crate::script::script_hash(&parsed.flow),
            flow: Arc::new(parsed.flow),
            prompts: source(&tts),
            conversation: None,
            defaults: vars(&[
                ("tenantName", "Default Co"),
                ("day", "Friday"),
                ("smsOnly", "y"),
            ]),
        };
        let prepared = prepare_script(&script, &vars(&[("day", "Monday")]))
            .await
            .unwrap();
        assert!(
            prepared
                .texts()
                .contains(&"Hi there, this is Default Co.".to_owned())
        );
        assert!(prepared.texts().contains(&"Press 1 for Monday.".to_owned()));
    }
}
