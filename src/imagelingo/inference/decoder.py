"""The caption decoder (LSTM with soft attention, Show, Attend and Tell) and batched beam search.

features [B, R, F] --project--> context [B, R, C]
each step: attention over the R regions given h, gated context, LSTM, word scores.
"""

from __future__ import annotations

from dataclasses import asdict, dataclass

import torch
import torch.nn.functional as F
from torch import nn
from torch.nn.utils.rnn import pack_padded_sequence


@dataclass(frozen=True)
class DecoderConfig:
    # No defaults: training sets them from params.yaml's `train` section (train.decoder_config),
    # loaders from the model's config.json.
    vocab_size: int
    feature_dim: int
    embed_dim: int
    hidden_dim: int
    attention_dim: int
    context_dim: int  # region features are projected to this once per image
    dropout: float

    def to_dict(self) -> dict:
        return asdict(self)


State = tuple[torch.Tensor, torch.Tensor, torch.Tensor, torch.Tensor]  # h, c, context, context_att


class CaptionDecoder(nn.Module):
    def __init__(self, config: DecoderConfig) -> None:
        super().__init__()
        self.config = config
        c = config
        self.project = nn.Sequential(nn.Linear(c.feature_dim, c.context_dim), nn.ReLU())
        self.att_context = nn.Linear(c.context_dim, c.attention_dim)
        self.att_hidden = nn.Linear(c.hidden_dim, c.attention_dim)
        self.att_score = nn.Linear(c.attention_dim, 1)
        self.gate = nn.Linear(c.hidden_dim, c.context_dim)  # the paper's "beta" gate
        self.init_h = nn.Linear(c.context_dim, c.hidden_dim)
        self.init_c = nn.Linear(c.context_dim, c.hidden_dim)
        self.embed = nn.Embedding(c.vocab_size, c.embed_dim)
        self.lstm = nn.LSTMCell(c.embed_dim + c.context_dim, c.hidden_dim)
        self.dropout = nn.Dropout(c.dropout)
        self.out = nn.Linear(c.hidden_dim, c.vocab_size)

    def init_state(self, features: torch.Tensor) -> State:
        context = self.project(features)
        mean = context.mean(dim=1)
        return (
            torch.tanh(self.init_h(mean)),
            torch.tanh(self.init_c(mean)),
            context,
            self.att_context(context),
        )

    def _attend(
        self, h: torch.Tensor, context: torch.Tensor, context_att: torch.Tensor
    ) -> tuple[torch.Tensor, torch.Tensor]:
        energy = self.att_score(torch.tanh(context_att + self.att_hidden(h).unsqueeze(1)))
        alpha = torch.softmax(energy.squeeze(2), dim=1)
        attended = torch.bmm(alpha.unsqueeze(1), context).squeeze(1)
        return alpha, torch.sigmoid(self.gate(h)) * attended

    def step(self, words: torch.Tensor, state: State) -> tuple[torch.Tensor, State, torch.Tensor]:
        """One word in -> (word scores [B, V], next state, attention [B, R])."""
        h, c, context, context_att = state
        alpha, attended = self._attend(h, context, context_att)
        h, c = self.lstm(torch.cat([self.embed(words), attended], dim=1), (h, c))
        return self.out(self.dropout(h)), (h, c, context, context_att), alpha

    def forward(
        self, features: torch.Tensor, captions: torch.Tensor, lengths: torch.Tensor
    ) -> tuple[torch.Tensor, torch.Tensor, torch.Tensor]:
        """Teacher forcing. `captions` [B, T] start with <start>; `lengths` count it and <end>.

        Captions must be sorted by decreasing length: at step t only the first rows are still
        inside their caption, so padding costs no compute. The word scores of all steps go
        through the output layer in one matrix product. Returns (scores [N, V], targets [N]) for
        the N real next-words in time-major packed order, and the attention each region received
        over the whole caption [B, R].
        """
        targets = pack_padded_sequence(captions[:, 1:], (lengths - 1).cpu(), batch_first=True)
        embedded = self.embed(captions[:, :-1])
        h, c, context, context_att = self.init_state(features)
        hidden_states, attention_total = [], features.new_zeros(features.shape[:2])
        for t, active in enumerate(targets.batch_sizes.tolist()):
            h, c, context, context_att = (
                h[:active],
                c[:active],
                context[:active],
                context_att[:active],
            )
            alpha, attended = self._attend(h, context, context_att)
            h, c = self.lstm(torch.cat([embedded[:active, t], attended], dim=1), (h, c))
            hidden_states.append(h)
            attention_total = attention_total + F.pad(alpha, (0, 0, 0, len(features) - active))
        scores = self.out(self.dropout(torch.cat(hidden_states)))
        return scores, targets.data, attention_total


def _settled(beam_scores: torch.Tensor, finished: torch.Tensor) -> bool:
    """True when every image's best finished beam scores at least its best live beam. Scores
    are sums of log-probabilities, so live beams only fall: ranked by total score, nothing can
    overtake, and the remaining steps cannot change the result."""
    if not bool(finished.any(dim=1).all()):
        return False
    best_finished = beam_scores.masked_fill(~finished, float("-inf")).max(dim=1).values
    best_live = beam_scores.masked_fill(finished, float("-inf")).max(dim=1).values
    # strictly: on a tie the remaining steps decide which beam argmax picks
    return bool((best_finished > best_live).all())


@dataclass
class BeamResult:
    tokens: list[int]  # word ids, without <start> and <end>
    score: float  # sum of log-probabilities, <end> included
    alphas: torch.Tensor  # [len(tokens), R]: attention for each emitted word


@torch.no_grad()
def beam_search(
    decoder: nn.Module,
    features: torch.Tensor,
    beam_width: int,
    max_len: int,
    start_id: int,
    end_id: int,
    length_penalty: float = 0.0,
    banned_ids: tuple[int, ...] = (),
) -> list[BeamResult]:
    """Decode a batch of images together: B images x k beams run as one [B*k] batch per step.

    `decoder` needs `init_state(features) -> state tuple` and `step(words, state) -> (scores,
    state, alpha)`. A finished beam is frozen: it can only extend with <end> at no cost. The
    best finished hypothesis per image is chosen by score / length**length_penalty. Words in
    `banned_ids` (<unk>, <pad>, <start>) are never emitted.
    """
    batch, k = features.shape[0], beam_width
    state = decoder.init_state(features)
    state = tuple(s.repeat_interleave(k, dim=0) for s in state)
    words = torch.full((batch * k,), start_id, dtype=torch.long, device=features.device)
    # Only the first beam of each image is live at step 0, so the k beams don't start identical.
    beam_scores = torch.full((batch, k), float("-inf"), device=features.device)
    beam_scores[:, 0] = 0.0
    finished = torch.zeros(batch, k, dtype=torch.bool, device=features.device)
    lengths = torch.zeros(batch, k, device=features.device)
    history = torch.zeros(batch, k, 0, dtype=torch.long, device=features.device)
    alpha_history = None
    for _ in range(max_len):
        scores, state, alpha = decoder.step(words, state)
        log_probs = F.log_softmax(scores.float(), dim=-1).view(batch, k, -1)
        if banned_ids:
            log_probs[..., list(banned_ids)] = float("-inf")
        vocab = log_probs.shape[-1]
        frozen = torch.full_like(log_probs, float("-inf"))
        frozen[..., end_id] = 0.0
        log_probs = torch.where(finished.unsqueeze(-1), frozen, log_probs)
        total = (beam_scores.unsqueeze(-1) + log_probs).view(batch, -1)
        beam_scores, flat = total.topk(k, dim=1)
        parent, words = flat // vocab, flat % vocab
        gather = (parent + torch.arange(batch, device=parent.device).unsqueeze(1) * k).view(-1)
        state = tuple(s.index_select(0, gather) for s in state)
        history = torch.cat(
            [
                history.gather(1, parent.unsqueeze(-1).expand(-1, -1, history.shape[2])),
                words.unsqueeze(-1),
            ],
            dim=2,
        )
        step_alpha = alpha.view(batch, k, -1).gather(
            1, parent.unsqueeze(-1).expand(-1, -1, alpha.shape[1])
        )
        alpha_history = (
            step_alpha.unsqueeze(2)
            if alpha_history is None
            else torch.cat(
                [
                    alpha_history.gather(
                        1, parent[..., None, None].expand(-1, -1, *alpha_history.shape[2:])
                    ),
                    step_alpha.unsqueeze(2),
                ],
                dim=2,
            )
        )
        was_finished = finished.gather(1, parent)
        lengths = lengths.gather(1, parent) + (~was_finished).float()
        finished = was_finished | (words == end_id)
        words = words.view(-1)
        if bool(finished.all()) or (length_penalty == 0 and _settled(beam_scores, finished)):
            break
    ranked = beam_scores / lengths.clamp(min=1) ** length_penalty
    best = ranked.argmax(dim=1)
    results = []
    for i in range(batch):
        sequence = history[i, best[i]].tolist()
        n = sequence.index(end_id) if end_id in sequence else len(sequence)
        results.append(
            BeamResult(
                sequence[:n], float(beam_scores[i, best[i]]), alpha_history[i, best[i], :n].cpu()
            )
        )
    return results
