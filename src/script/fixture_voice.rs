//! Recorded prompts as a synthesizer, so scripted calls work with no provider key at all.
//!
//! A folder holds 8 kHz mono 16-bit WAV files and an index, `prompts.tsv`: one `FILE<TAB>TEXT`
//! line per recording (blank lines and lines starting with `#` are skipped). [`FixtureVoice`]
//! loads every recording into memory and "synthesizes" a text by playing its recording; a text
//! with no recording is refused. The shipped folder, `fixtures/audio/prompts/`, is made by
//! `fixtures/audio/generate.sh` (espeak-ng) and covers the appointment confirmation script
//! rendered with [`DEMO_VARIABLES`].

use std::collections::HashMap;
use std::path::{Path, PathBuf};
use std::sync::Arc;

use tokio::sync::mpsc;
use tokio_util::sync::CancellationToken;

use super::prompts::{PROMPT_RATE, PromptClip};
use crate::audio::resample::Resampler;
use crate::tts::{SynthesisStats, TtsError, TtsProvider, TtsVoice};

/// Provider name, and the voice the prompt cache files recordings under.
pub const FIXTURE_VOICE: &str = "fixtures";
/// The index file in a recordings folder.
pub const INDEX_FILE: &str = "prompts.tsv";
/// The variables the shipped recordings were rendered with (the offline demo's tenant and
/// appointment; `firstName` is left to its fallback).
pub const DEMO_VARIABLES: [(&str, &str); 2] = [
    ("tenantName", "Acme Dental"),
    ("appointmentDate", "Tuesday at 3 PM"),
];
/// Audio handed out per piece (100 ms at 8 kHz).
const PIECE_SAMPLES: usize = 800;

/// Why the recordings cannot be used.
#[derive(Debug, thiserror::Error)]
pub enum FixtureError {
    /// A file could not be read.
    #[error("recorded prompts: cannot read {path}: {source}")]
    Read {
        /// The file.
        path: PathBuf,
        /// The error.
        source: std::io::Error,
    },
    /// A line of the index is malformed.
    #[error("recorded prompts: {path}:{line}: {message}")]
    Index {
        /// The index file.
        path: PathBuf,
        /// 1-based line number.
        line: usize,
        /// What is wrong.
        message: String,
    },
    /// A recording is not an 8 kHz mono 16-bit WAV.
    #[error("recorded prompts: {path}: {message}")]
    Wav {
        /// The file.
        path: PathBuf,
        /// What is wrong.
        message: String,
    },
}

/// One line of the index: a recording's file name and the text it says.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct IndexEntry {
    /// File name inside the folder (`*.wav`, no folders).
    pub file: String,
    /// The exact text.
    pub text: String,
}

/// Parses an index (`FILE<TAB>TEXT` lines). Errors carry the 1-based line number.
pub fn parse_index(index: &str) -> Result<Vec<IndexEntry>, (usize, String)> {
    let mut entries: Vec<IndexEntry> = Vec::new();
    for (number, line) in index.lines().enumerate() {
        let number = number + 1;
        if line.trim().is_empty() || line.starts_with('#') {
            continue;
        }
        let Some((file, text)) = line.split_once('\t') else {
            return Err((number, "expected FILE<TAB>TEXT".to_owned()));
        };
        let valid_name = file.ends_with(".wav")
            && file.len() > ".wav".len()
            && !file.starts_with('.')
            && file
                .chars()
                .all(|c| c.is_ascii_alphanumeric() || matches!(c, '_' | '-' | '.'));
        if !valid_name {
            return Err((
                number,
                format!("{file:?} is not a plain .wav file name (letters, digits, _ - .)"),
            ));
        }
        if text.trim().is_empty() || text.contains('\t') || text.trim() != text {
            return Err((
                number,
                "the text must be non-empty, with no tab and no blanks at either end".to_owned(),
            ));
        }
        if let Some(earlier) = entries.iter().find(|e| e.text == text || e.file == file) {
            return Err((
                number,
                format!("repeats the file or text of {:?}", earlier.file),
            ));
        }
        entries.push(IndexEntry {
            file: file.to_owned(),
            text: text.to_owned(),
        });
    }
    Ok(entries)
}

/// Reads the index of the recordings in `dir`.
pub fn read_index(dir: &Path) -> Result<Vec<IndexEntry>, FixtureError> {
    let path = dir.join(INDEX_FILE);
    let text = std::fs::read_to_string(&path).map_err(|source| FixtureError::Read {
        path: path.clone(),
        source,
    })?;
    parse_index(&text).map_err(|(line, message)| FixtureError::Index {
        path,
        line,
        message,
    })
}

/// Reads an 8 kHz mono 16-bit WAV.
pub fn read_wav(path: &Path) -> Result<Vec<i16>, FixtureError> {
    let wav_error = |message: String| FixtureError::Wav {
        path: path.to_path_buf(),
        message,
    };
    let reader = hound::WavReader::open(path).map_err(|e| match e {
        hound::Error::IoError(source) => FixtureError::Read {
            path: path.to_path_buf(),
            source,
        },
        other => wav_error(other.to_string()),
    })?;
    let spec = reader.spec();
    if spec.sample_rate != PROMPT_RATE
        || spec.channels != 1
        || spec.bits_per_sample != 16
        || spec.sample_format != hound::SampleFormat::Int
    {
        return Err(wav_error(format!(
            "expected {PROMPT_RATE} Hz mono 16-bit PCM, found {} Hz, {} channel(s), {} bits",
            spec.sample_rate, spec.channels, spec.bits_per_sample
        )));
    }
    reader
        .into_samples::<i16>()
        .collect::<Result<Vec<i16>, _>>()
        .map_err(|e| wav_error(e.to_string()))
}

/// Recorded prompts, by text, in memory.
#[derive(Clone)]
pub struct FixtureVoice {
    clips: Arc<HashMap<String, PromptClip>>,
}

impl std::fmt::Debug for FixtureVoice {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("FixtureVoice")
            .field("recordings", &self.clips.len())
            .finish()
    }
}

impl FixtureVoice {
    /// Loads every recording listed in `dir/prompts.tsv`.
    pub fn load(dir: &Path) -> Result<FixtureVoice, FixtureError> {
        let mut clips = HashMap::new();
        for entry in read_index(dir)? {
            let pcm = read_wav(&dir.join(&entry.file))?;
            clips.insert(entry.text, PromptClip::from(pcm));
        }
        Ok(FixtureVoice {
            clips: Arc::new(clips),
        })
    }

    /// The recording of `text`, if there is one.
    pub fn clip(&self, text: &str) -> Option<PromptClip> {
        self.clips.get(text).cloned()
    }

    /// How many recordings there are.
    pub fn len(&self) -> usize {
        self.clips.len()
    }

    /// Whether there are no recordings.
    pub fn is_empty(&self) -> bool {
        self.clips.is_empty()
    }
}

impl TtsProvider for FixtureVoice {
    fn name(&self) -> &'static str {
        FIXTURE_VOICE
    }

    fn voice(&self, sample_rate: u32) -> Box<dyn TtsVoice> {
        Box::new(FixtureSpeaker {
            clips: self.clips.clone(),
            sample_rate,
        })
    }
}

/// One call's use of the recordings.
struct FixtureSpeaker {
    clips: Arc<HashMap<String, PromptClip>>,
    sample_rate: u32,
}

#[async_trait::async_trait]
impl TtsVoice for FixtureSpeaker {
    async fn synthesize(
        &mut self,
        text: &str,
        out: &mpsc::Sender<Vec<i16>>,
        cancel: &CancellationToken,
    ) -> Result<SynthesisStats, TtsError> {
        let clip = self.clips.get(text).ok_or_else(|| TtsError::Refused {
            provider: FIXTURE_VOICE,
            reason: format!(
                "no recording of {:?} in {INDEX_FILE}",
                crate::tts::clip(text, 80)
            ),
        })?;
        let pcm: Vec<i16> = if self.sample_rate == PROMPT_RATE {
            clip.to_vec()
        } else {
            let mut resampler = Resampler::new(PROMPT_RATE, self.sample_rate).map_err(|e| {
                TtsError::Config(format!(
                    "recorded prompts cannot be played at {} Hz: {e}",
                    self.sample_rate
                ))
            })?;
            let mut pcm = Vec::new();
            resampler.process(clip, &mut pcm);
            resampler.flush(&mut pcm);
            pcm
        };
        let mut stats = SynthesisStats {
            first_byte: Some(std::time::Duration::ZERO),
            ..SynthesisStats::default()
        };
        for piece in pcm.chunks(PIECE_SAMPLES) {
            if cancel.is_cancelled() {
                stats.cancelled = true;
                break;
            }
            tokio::select! {
                sent = out.send(piece.to_vec()) => {
                    if sent.is_err() {
                        break;
                    }
                    stats.samples += piece.len() as u64;
                }
                () = cancel.cancelled() => {
                    stats.cancelled = true;
                    break;
                }
            }
        }
        Ok(stats)
    }

    async fn close(&mut self) {}
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::script::synth::{SYNTH_TIMEOUT, synthesize_clip};

    fn write_wav(path: &Path, rate: u32, channels: u16, samples: &[i16]) {
        let spec = hound::WavSpec {
            channels,
            sample_rate: rate,
            bits_per_sample: 16,
            sample_format: hound::SampleFormat::Int,
        };
        let mut writer = hound::WavWriter::create(path, spec).unwrap();
        for &s in samples {
            writer.write_sample(s).unwrap();
        }
        writer.finalize().unwrap();
    }

    #[test]
    fn index_lines_parse_and_bad_ones_name_their_line() {
        let good = "# recordings\n\nhello.wav\tHello there.\nbye-1.wav\tGoodbye!\n";
        assert_eq!(
            parse_index(good).unwrap(),
            vec![
                IndexEntry {
                    file: "hello.wav".into(),
                    text: "Hello there.".into()
                },
                IndexEntry {
                    file: "bye-1.wav".into(),
                    text: "Goodbye!".into()
                },
            ]
        );
        for (bad, line, needle) in [
            ("a.wav Hello", 1, "FILE<TAB>TEXT"),
            ("# c\n../a.wav\tHello", 2, "plain"),
            ("a/b.wav\tHello", 1, "plain"),
            (".wav\tHello", 1, "plain"),
            ("a.mp3\tHello", 1, "plain"),
            ("a.wav\t", 1, "non-empty"),
            ("a.wav\t Hello", 1, "blanks"),
            ("a.wav\tHello\tagain", 1, "tab"),
            ("a.wav\tHello\nb.wav\tHello", 2, "repeats"),
            ("a.wav\tHello\na.wav\tBye", 2, "repeats"),
        ] {
            let (at, message) = parse_index(bad).unwrap_err();
            assert_eq!(at, line, "{bad:?}");
            assert!(message.contains(needle), "{bad:?}: {message}");
        }
    }

    proptest::proptest! {
        #[test]
        fn any_index_text_parses_or_names_a_line(text in "\\PC{0,200}") {
            match parse_index(&text) {
                Ok(entries) => {
                    for e in entries {
                        proptest::prop_assert!(e.file.ends_with(".wav"));
                        proptest::prop_assert!(!e.text.trim().is_empty());
                    }
                }
                Err((line, _)) => {
                    proptest::prop_assert!(line >= 1 && line <= text.lines().count());
                }
            }
        }

        #[test]
        fn written_indexes_read_back(
            entries in proptest::collection::btree_map("[a-z][a-z0-9_]{0,12}", "[A-Za-z0-9][A-Za-z0-9 ,.?!']{0,40}[A-Za-z0-9.?!]", 0..8)
        ) {
            let mut seen = std::collections::HashSet::new();
            let entries: Vec<(String, String)> = entries
                .into_iter()
                .filter(|(_, text)| seen.insert(text.clone()))
                .map(|(file, text)| (format!("{file}.wav"), text))
                .collect();
            let index: String = entries.iter().map(|(f, t)| format!("{f}\t{t}\n")).collect();
            let parsed = parse_index(&index).unwrap();
            let back: Vec<(String, String)> = parsed.into_iter().map(|e| (e.file, e.text)).collect();
            proptest::prop_assert_eq!(back, entries);
        }
    }

    #[tokio::test]
    async fn plays_recordings_by_text_and_refuses_others() {
        let dir = tempfile::tempdir().unwrap();
        let samples: Vec<i16> = (0..2000).map(|i| (i % 50 * 100) as i16).collect();
        write_wav(&dir.path().join("hi.wav"), 8000, 1, &samples);
        std::fs::write(dir.path().join(INDEX_FILE), "hi.wav\tHi.\n").unwrap();
        let voice = FixtureVoice::load(dir.path()).unwrap();
        assert_eq!(voice.len(), 1);
        assert_eq!(&voice.clip("Hi.").unwrap()[..], &samples[..]);

        let mut speaker = voice.voice(8000);
        let got = synthesize_clip(speaker.as_mut(), "Hi.", SYNTH_TIMEOUT)
            .await
            .unwrap();
        assert_eq!(got.pcm, samples);
        assert_eq!(got.stats.samples, 2000);

        let err = synthesize_clip(speaker.as_mut(), "Bye.", SYNTH_TIMEOUT)
            .await
            .unwrap_err()
            .to_string();
        assert!(
            err.contains("no recording") && err.contains("Bye."),
            "{err}"
        );

        let mut wide = voice.voice(16000);
        let got = synthesize_clip(wide.as_mut(), "Hi.", SYNTH_TIMEOUT)
            .await
            .unwrap();
        assert!(
            (got.pcm.len() as i64 - 4000).abs() < 200,
            "{}",
            got.pcm.len()
        );
    }

    #[test]
    fn bad_folders_are_clear_errors() {
        let dir = tempfile::tempdir().unwrap();
        let err = FixtureVoice::load(dir.path()).unwrap_err().to_string();
        assert!(err.contains(INDEX_FILE), "{err}");

        std::fs::write(dir.path().join(INDEX_FILE), "gone.wav\tHi.\n").unwrap();
        let err = FixtureVoice::load(dir.path()).unwrap_err().to_string();
        assert!(err.contains("gone.wav"), "{err}");

        write_wav(&dir.path().join("wide.wav"), 16000, 1, &[0; 10]);
        std::fs::write(dir.path().join(INDEX_FILE), "wide.wav\tHi.\n").unwrap();
        let err = FixtureVoice::load(dir.path()).unwrap_err().to_string();
        assert!(err.contains("wide.wav") && err.contains("16000"), "{err}");

        write_wav(&dir.path().join("stereo.wav"), 8000, 2, &[0; 10]);
        std::fs::write(dir.path().join(INDEX_FILE), "stereo.wav\tHi.\n").unwrap();
        let err = FixtureVoice::load(dir.path()).unwrap_err().to_string();
        assert!(err.contains("2 channel"), "{err}");

        std::fs::write(dir.path().join("junk.wav"), "not a wav").unwrap();
        std::fs::write(dir.path().join(INDEX_FILE), "x\ny\njunk.wav\n").unwrap();
        let err = FixtureVoice::load(dir.path()).unwrap_err().to_string();
        assert!(err.contains(":1:"), "{err}");
        std::fs::write(dir.path().join(INDEX_FILE), "junk.wav\tHi.\n").unwrap();
        let err = FixtureVoice::load(dir.path()).unwrap_err().to_string();
        assert!(err.contains("junk.wav"), "{err}");
    }
}
