// speaker_filter: keeps `transcript.update` deliveries whose utterance comes from one of the
// configured speakers, and drops empty transcripts. Other triggers pass unchanged.
//
// Config (the plugin's `config` table in hookgate.toml):
//   speakers = ["Ana", "Bo"]   # who to keep; absent or empty keeps every speaker
//   case_sensitive = false     # compare names exactly (true) or ignoring case (default)
//
// Built with componentize-js against wit/hookgate.wit: `node build.mjs` in plugins/js.

import { log } from 'hookgate:plugin/host@0.1.0';

// Config values arrive as text: strings as themselves, other TOML values as their TOML text
// (`["Ana", "Bo"]`, `true`). TOML's string arrays are also valid JSON, so JSON.parse reads them.
function configOf(delivery) {
  const config = new Map(delivery.config);
  let speakers = [];
  const raw = config.get('speakers');
  if (raw !== undefined) {
    try {
      const parsed = JSON.parse(raw);
      speakers = Array.isArray(parsed) ? parsed.map(String) : [String(parsed)];
    } catch {
      speakers = raw.split(',').map((s) => s.trim()).filter((s) => s.length > 0);
    }
  }
  const caseSensitive = config.get('case_sensitive') === 'true';
  return { speakers, caseSensitive };
}

export function handle(delivery) {
  if (delivery.trigger !== 'transcript.update') {
    return { tag: 'keep' };
  }
  const envelope = JSON.parse(delivery.envelope);
  const data = envelope.data ?? {};
  const text = data.transcription?.transcript ?? '';
  if (text.trim() === '') {
    return { tag: 'drop', val: 'empty transcript' };
  }
  const { speakers, caseSensitive } = configOf(delivery);
  if (speakers.length === 0) {
    return { tag: 'keep' };
  }
  const name = String(data.speaker_name ?? '');
  const norm = (s) => (caseSensitive ? s : s.toLowerCase());
  if (speakers.some((s) => norm(s) === norm(name))) {
    return { tag: 'keep' };
  }
  log('debug', `dropping an utterance by ${JSON.stringify(name)}`);
  return { tag: 'drop', val: `speaker ${JSON.stringify(name)} is not in speakers` };
}
