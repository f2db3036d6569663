"""Text from contexts: greedy or sampled decoding, and log-probabilities of candidate answers."""

from __future__ import annotations

from collections.abc import Sequence

import torch
from torch import Tensor

from bagel_world.inference.appending import ContextBuilding
from bagel_world.inference.batching import Contexts, Segment, ctx_list


class TextGeneration(ContextBuilding):
    """Decoding text after contexts (on forks: the contexts are not changed) and scoring answers."""

    @torch.no_grad()
    def generate_text(
        self,
        ctxs: Contexts,
        *,
        max_length: int = 512,
        do_sample: bool = False,
        temperature: float = 0.3,
        generator: torch.Generator | None = None,
        return_details: bool = False,
    ):
        """Decode from `<|im_start|>` until `<|im_end|>` (at most max_length-1 new tokens).

        Greedy by default; sampling draws from softmax(logits / temperature) with no
        top-k/top-p. The given contexts are not changed (decoding runs on forks).
        Returns the texts, or with return_details a dict with token ids and step logits.
        """
        if max_length < 1:
            raise ValueError(f"max_length must be >= 1, got {max_length}")
        if do_sample and temperature <= 0:
            raise ValueError(f"temperature must be > 0 when sampling, got {temperature}")
        work = [c.fork() for c in ctx_list(ctxs)]
        B = len(work)
        eos = self.token_ids["eos"]
        cur = [self.token_ids["bos"]] * B
        seqs: list[list[int]] = [[] for _ in range(B)]
        logits_log: list[list[Tensor]] = [[] for _ in range(B)]
        active = list(range(B))
        for _ in range(max_length):
            for b in active:
                seqs[b].append(cur[b])
            ids = torch.tensor([cur[b] for b in active], device=self.device)
            emb = self.model.embed_text(ids)
            segs = [Segment(emb[j : j + 1], torch.zeros(1, dtype=torch.long, device=self.device), None, 1, "tok")
                    for j in range(len(active))]
            hidden, _ = self._run([work[b] for b in active], segs, causal=True, update=True)
            logits = self.model.language_model.lm_head(hidden[:, 0]).float()
            if do_sample:
                probs = torch.softmax(logits / temperature, dim=-1)
                nxt = torch.multinomial(probs.cpu(), 1, generator=generator).squeeze(1).tolist()
            else:
                nxt = logits.argmax(-1).tolist()
            still = []
            for j, b in enumerate(active):
                logits_log[b].append(logits[j].cpu())
                cur[b] = nxt[j]
                if nxt[j] != eos:
                    still.append(b)
            active = still
            if not active:
                break
        texts = [self.tokenizer.decode(s[1:], skip_special_tokens=False) for s in seqs]
        if return_details:
            return {"texts": texts, "tokens": seqs, "step_logits": [torch.stack(step) for step in logits_log]}
        return texts

    @torch.no_grad()
    def score_answers(self, ctxs: Contexts, answers: Sequence[str]) -> Tensor:
        """log P(answer) after each context, for each candidate answer: (B, A) float32.

        An answer is scored as the text segment `<|im_start|> answer <|im_end|>` the model
        would produce next (the closing token included), summed over its tokens.

        All answers of a context run in one row: the row feeds every answer's
        `<|im_start|> answer` as its own causal block, each starting at the context's rope
        position and seeing only the context and its own earlier tokens, so each answer's
        logits are those of scoring it alone (one padded cache per context, not per answer).
        """
        ctxs = ctx_list(ctxs)
        if not answers:
            raise ValueError("answers must not be empty")
        ids = [self._segment_ids(a) for a in answers]
        fed = [i[:-1] for i in ids]  # <|im_start|> answer: the last position predicts <|im_end|>
        blocks = tuple(len(f) for f in fed)
        tokens = torch.tensor([t for f in fed for t in f], device=self.device)
        offsets = torch.cat([torch.arange(n, device=self.device) for n in blocks])
        seg = Segment(self.model.embed_text(tokens), offsets, None, 0, f"answers({len(answers)})")
        hidden, _ = self._run(ctxs, [seg] * len(ctxs), causal=True, update=False, blocks=blocks)
        logp = torch.log_softmax(self.model.language_model.lm_head(hidden).float(), dim=-1)  # (B, sum, V)
        target = torch.tensor([t for i in ids for t in i[1:]], device=logp.device)
        per_token = logp.gather(2, target.expand(len(ctxs), -1)[..., None])[..., 0]  # (B, sum)
        answer_of = torch.repeat_interleave(torch.arange(len(answers), device=logp.device),
                                            torch.tensor(blocks, device=logp.device))
        scores = torch.zeros(len(ctxs), len(answers), device=logp.device).index_add_(1, answer_of, per_token)
        return scores.cpu()
