//! Start-up checks: provider keys are verified before the gateway serves, so a refused or
//! missing key is a clear error at start, not a failure on the first call.

mod common;
mod fakes;

use common::test_config;
use fakes::deepgram_listen::{FakeListen, ListenConfig};
use fakes::deepgram_speak::FakeDeepgramSpeak;
use fakes::openai_chat::{ChatFake, ChatFakeConfig};
use voicegw::config::Config;
use voicegw::server::Gateway;

async fn config_against_fakes(
    listen: &FakeListen,
    speak: &FakeDeepgramSpeak,
    chat: &ChatFake,
) -> Config {
    let mut config = test_config();
    fakes::use_fakes(&mut config, listen, speak, chat);
    config
}

#[tokio::test]
async fn good_keys_pass_and_each_refused_key_is_named() {
    let listen = FakeListen::start(ListenConfig::default())
        .await
        .expect("start the fake");
    let speak = FakeDeepgramSpeak::start().await.expect("start the fake");
    let chat = ChatFake::start(ChatFakeConfig::default())
        .await
        .expect("start the fake");
    let config = config_against_fakes(&listen, &speak, &chat).await;
    let gateway = Gateway::new(&config).unwrap();
    gateway.check_credentials().await.unwrap();

    let mut bad = config.clone();
    bad.stt.deepgram.api_key = "wrong".into();
    bad.tts.deepgram.api_key = "wrong".into();
    let err = Gateway::new(&bad)
        .unwrap()
        .check_credentials()
        .await
        .unwrap_err()
        .to_string();
    assert!(err.contains("Deepgram") && err.contains("401"), "{err}");

    let mut bad = config.clone();
    bad.llm.api_key = "sk-wrong".into();
    let err = Gateway::new(&bad)
        .unwrap()
        .check_credentials()
        .await
        .unwrap_err()
        .to_string();
    assert!(
        err.contains("language model") && err.contains("401"),
        "{err}"
    );
}

#[tokio::test]
async fn an_unreachable_provider_is_logged_not_fatal() {
    let mut config = test_config();
    config.stt.deepgram.api_key = "k".into();
    config.stt.deepgram.base_url = "http://127.0.0.1:9".into();
    config.tts.deepgram.api_key = "k".into();
    config.tts.deepgram.base_url = "http://127.0.0.1:9".into();
    config.llm.api_key = "k".into();
    config.llm.base_url = "http://127.0.0.1:9/v1".into();
    let gateway = Gateway::new(&config).unwrap();
    gateway.check_credentials().await.unwrap();
}

#[test]
fn the_binary_refuses_to_start_with_half_a_pipeline() {
    let output = std::process::Command::new(env!("CARGO_BIN_EXE_voicegw"))
        .args(["serve", "--listen", "127.0.0.1:0"])
        .env("OPENAI_API_KEY", "sk-test")
        .env_remove("DEEPGRAM_API_KEY")
        .output()
        .unwrap();
    assert!(!output.status.success());
    let stderr = String::from_utf8_lossy(&output.stderr);
    assert!(
        stderr.contains("the llm agent needs speech-to-text")
            && stderr.contains("DEEPGRAM_API_KEY"),
        "{stderr}"
    );
}
