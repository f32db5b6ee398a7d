"""Chat templates (Jinja) of the vision-language families, for processors that ship none of their own.

Messages are ``{"role": ..., "content": [{"type": "image"} | {"type": "text", "text": ...}, ...]}``; an image
renders as the processor's placeholder, which the processor then expands into the image's tokens.

- ``LLAVA``: LLaVA-1.5 (``llava_v1`` conversation of the original repository; llava-hf's format):
  ``USER: <image>\\n{question} ASSISTANT:``;
- ``LLAVA_MISTRAL``: LLaVA-Med v1.5 (``mistral_instruct``): ``[INST] <image>\\n{question} [/INST]``, the
  tokenizer adding the BOS;
- ``GEMMA3``: Gemma 3 / MedGemma: ``<bos><start_of_turn>user\\n<start_of_image>{question}<end_of_turn>\\n``
  ``<start_of_turn>model\\n``.
"""
from __future__ import annotations

LLAVA = (
    "{% for m in messages %}{% if m['role'] != 'system' %}{{ m['role'].upper() + ': ' }}{% endif %}"
    "{% for c in m['content'] %}{% if c['type'] == 'image' %}{{ '<image>\n' }}{% endif %}{% endfor %}"
    "{% for c in m['content'] %}{% if c['type'] == 'text' %}{{ c['text'] + ' ' }}{% endif %}{% endfor %}"
    "{% endfor %}{% if add_generation_prompt %}{{ 'ASSISTANT:' }}{% endif %}")
LLAVA_MISTRAL = (
    "{% for m in messages %}{% if m['role'] == 'user' %}{{ '[INST] ' }}"
    "{% for c in m['content'] %}{% if c['type'] == 'image' %}{{ '<image>\n' }}{% endif %}{% endfor %}"
    "{% for c in m['content'] %}{% if c['type'] == 'text' %}{{ c['text'] }}{% endif %}{% endfor %}"
    "{{ ' [/INST]' }}{% elif m['role'] == 'assistant' %}"
    "{% for c in m['content'] %}{% if c['type'] == 'text' %}{{ ' ' + c['text'] + eos_token }}{% endif %}"
    "{% endfor %}{% endif %}{% endfor %}")
GEMMA3 = (
    "{{ bos_token }}{% for m in messages %}{{ '<start_of_turn>' + ('model' if m['role'] == 'assistant' else m['role'])"
    " + '\n' }}{% for c in m['content'] %}{% if c['type'] == 'image' %}{{ '<start_of_image>' }}"
    "{% elif c['type'] == 'text' %}{{ c['text'] }}{% endif %}{% endfor %}{{ '<end_of_turn>\n' }}{% endfor %}"
    "{% if add_generation_prompt %}{{ '<start_of_turn>model\n' }}{% endif %}")
