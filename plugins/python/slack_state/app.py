"""slack_state: reshapes `bot.state_change` into a Slack incoming-webhook message.

    {"text": "Bot bot_123 is now ended (post_processing_completed)"}

Other triggers pass unchanged. Config (the plugin's `config` table in hookgate.toml):

    template = "Bot {bot_id} is now {new_state} ({event_type})"   # optional

The template may use `bot_id`, `new_state`, `old_state`, `event_type` and `event_sub_type`.
Built with componentize-py against wit/hookgate.wit: see plugins/python/build.sh.
"""

import json

import wit_world
from componentize_py_types import Err
from wit_world.imports import host, types

DEFAULT_TEMPLATE = "Bot {bot_id} is now {new_state} ({event_type})"


class WitWorld(wit_world.WitWorld):
    def handle(self, delivery: types.Delivery) -> types.Decision:
        if delivery.trigger != "bot.state_change":
            return types.Decision_Keep()
        envelope = json.loads(delivery.envelope)
        data = envelope.get("data") or {}
        config = dict(delivery.config)
        fields = {
            "bot_id": envelope.get("bot_id", "?"),
            "new_state": data.get("new_state", "?"),
            "old_state": data.get("old_state", "?"),
            "event_type": data.get("event_type") or "no event",
            "event_sub_type": data.get("event_sub_type") or "",
        }
        try:
            text = config.get("template", DEFAULT_TEMPLATE).format(**fields)
        except (KeyError, IndexError, ValueError) as e:
            # An `err` fails the delivery with this message in the delivery log.
            raise Err(f"bad template: {e!r}")
        host.log(host.Level.DEBUG, f"slack text: {text}")
        return types.Decision_Replace(json.dumps({"text": text}))
