"""PBT of a small Transformer on a generated translation task, scored by BLEU.

The PBT paper's third domain is machine translation (a Transformer on WMT,
scored by BLEU). This is the laptop version, fully offline: a toy grammar
generates English-like source sentences (determiner, adjectives, noun, verb,
object, optional prepositional phrase) and a fixed rule set "translates" them:
every word goes through a dictionary (some words become two), adjectives follow
their noun, the verb moves to the end (SVO becomes SOV) and takes a suffix that
agrees with the subject's number. A seq2seq ``nn.Transformer`` learns it from
10,000 pairs; PBT tunes the learning rate, dropout and label smoothing while it
trains. Members are scored by corpus BLEU (``sacrebleu``, the field's standard
scorer) of greedy translations of 200 validation sentences; the best member's
BLEU on 1,000 test sentences is printed at the end.

    python examples/translation.py
    python examples/translation.py --population 4 --steps 400 --quiet
    torchpbt run examples/translation.py -- --steps 400
"""

from __future__ import annotations

import argparse
import math
import random

import sacrebleu
import torch
from torch import nn

import torchpbt as pbt

SPACE = {
    "lr": pbt.Float(1e-4, 1e-2, log=True),
    "dropout": pbt.Float(0.0, 0.3),
    "label_smoothing": pbt.Float(0.0, 0.2),
}
BATCH, D_MODEL, LAYERS, HEADS = 32, 64, 1, 4
SIZES = {"train": 10_000, "val": 200, "test": 1_000}
PAD, BOS, EOS = 0, 1, 2

NOUNS = ("cat dog bird horse child teacher farmer king queen doctor river tree house "
         "garden city boat book letter stone song").split()
VERBS = "sees finds likes takes builds follows paints carries reads hears".split()
ADJS = "big small red old young quiet happy dark bright cold".split()
PREPS = "near behind under above".split()


def _dictionary() -> dict[str, list[str]]:
    """A fixed source → target word map; every fourth word becomes two target words."""
    rng = random.Random(2024)
    words = ["the", "a", *NOUNS, *VERBS, *ADJS, *PREPS]
    def word() -> str:
        return "".join(rng.choice("bdfgklmnprstvz") + rng.choice("aeiou") for _ in range(2))
    return {w: [word() for _ in range(1 + (i % 4 == 3))] for i, w in enumerate(words)}


def _noun_phrase(rng: random.Random) -> list[str]:
    adjs = rng.sample(ADJS, rng.randrange(3))
    noun = rng.choice(NOUNS) + ("s" if rng.random() < 0.5 else "")
    return [rng.choice(("the", "a")), *adjs, noun]


def _translate(words: list[str], dic: dict[str, list[str]]) -> list[str]:
    """The rules: nouns then adjectives, subject object [prep-phrase] verb+agreement."""
    def np_(phrase: list[str]) -> list[str]:
        det, *adjs, noun = phrase
        plural = noun.endswith("s") and noun[:-1] in NOUNS
        base = noun[:-1] if plural else noun
        return [*dic[det], *dic[base], *(["ri"] if plural else []),
                *[t for a in adjs for t in dic[a]]]

    v = next(i for i, w in enumerate(words) if w in VERBS)
    subj, verb = words[:v], words[v]
    rest = words[v + 1:]
    p = next((i for i, w in enumerate(rest) if w in PREPS), len(rest))
    obj, pp = rest[:p], rest[p:]
    tail = [*dic[pp[0]], *np_(pp[1:])] if pp else []
    agree = "ma" if subj[-1].endswith("s") and subj[-1][:-1] in NOUNS else "to"
    return [*np_(subj), *np_(obj), *tail, *dic[verb], agree]


def make_pairs(n: int, seed: int) -> list[tuple[str, str]]:
    """n (source, target) sentence pairs; the same for the same seed."""
    rng, dic = random.Random(seed), _dictionary()
    pairs = []
    for _ in range(n):
        subj, obj = _noun_phrase(rng), _noun_phrase(rng)
        pp = [rng.choice(PREPS), *_noun_phrase(rng)] if rng.random() < 0.4 else []
        src = [*subj, rng.choice(VERBS), *obj, *pp]
        pairs.append((" ".join(src), " ".join(_translate(src, dic))))
    return pairs


class Vocab:
    def __init__(self, sentences: list[str]) -> None:
        self.words = ["<pad>", "<s>", "</s>", *sorted({w for s in sentences for w in s.split()})]
        self.index = {w: i for i, w in enumerate(self.words)}

    def encode(self, sentences: list[str]) -> torch.Tensor:
        rows = [[BOS, *(self.index[w] for w in s.split()), EOS] for s in sentences]
        width = max(map(len, rows))
        return torch.tensor([r + [PAD] * (width - len(r)) for r in rows], dtype=torch.long)

    def decode(self, ids: list[int]) -> str:
        words = []
        for i in ids:
            if i == EOS:
                break
            if i > EOS:
                words.append(self.words[i])
        return " ".join(words)


def load_data() -> dict:
    """Train/val/test splits as padded id tensors plus the reference strings; the same
    every call (fixed generator seeds), so every member sees the same task."""
    pairs = {s: make_pairs(n, seed) for (s, n), seed in zip(SIZES.items(), (1, 2, 3), strict=True)}
    src_v = Vocab([a for p in pairs.values() for a, _ in p])
    tgt_v = Vocab([b for p in pairs.values() for _, b in p])
    return {"src_vocab": src_v, "tgt_vocab": tgt_v, **{
        s: (src_v.encode([a for a, _ in p]), tgt_v.encode([b for _, b in p]), [b for _, b in p])
        for s, p in pairs.items()}}


class Seq2Seq(nn.Module):
    def __init__(self, src_size: int, tgt_size: int, dropout: float, max_len: int = 64) -> None:
        super().__init__()
        self.src_emb, self.tgt_emb = nn.Embedding(src_size, D_MODEL), nn.Embedding(tgt_size, D_MODEL)
        self.pos = nn.Embedding(max_len, D_MODEL)
        self.core = nn.Transformer(D_MODEL, HEADS, LAYERS, LAYERS, dim_feedforward=2 * D_MODEL,
                                   dropout=dropout, batch_first=True)
        self.core.encoder.use_nested_tensor = False  # padded batches stay plain tensors
        self.out = nn.Linear(D_MODEL, tgt_size)

    def set_dropout(self, p: float) -> None:
        for m in self.modules():  # a changed hparam reaches every dropout layer
            if isinstance(m, nn.Dropout):
                m.p = p

    def embed(self, emb: nn.Embedding, ids: torch.Tensor) -> torch.Tensor:
        pos = torch.arange(ids.shape[1], device=ids.device)
        return emb(ids) * math.sqrt(D_MODEL) + self.pos(pos)

    def encode(self, src: torch.Tensor) -> torch.Tensor:
        return self.core.encoder(self.embed(self.src_emb, src), src_key_padding_mask=src == PAD)

    def decode(self, memory: torch.Tensor, src: torch.Tensor, tgt: torch.Tensor) -> torch.Tensor:
        n = tgt.shape[1]  # bool masks throughout: True = may not attend
        causal = torch.ones(n, n, dtype=torch.bool, device=tgt.device).triu(1)
        h = self.core.decoder(self.embed(self.tgt_emb, tgt), memory, tgt_mask=causal,
                              tgt_is_causal=True, tgt_key_padding_mask=tgt == PAD,
                              memory_key_padding_mask=src == PAD)
        return self.out(h)

    def forward(self, src: torch.Tensor, tgt_in: torch.Tensor) -> torch.Tensor:
        return self.decode(self.encode(src), src, tgt_in)

    @torch.no_grad()
    def greedy(self, src: torch.Tensor, max_len: int) -> torch.Tensor:
        memory = self.encode(src)
        ys = torch.full((src.shape[0], 1), BOS, dtype=torch.long, device=src.device)
        for _ in range(max_len):
            nxt = self.decode(memory, src, ys)[:, -1].argmax(-1, keepdim=True)
            ys = torch.cat([ys, nxt], 1)
            if (ys == EOS).any(1).all():
                break
        return ys[:, 1:]


class TranslationMember(pbt.TorchMember):
    """``lr`` goes into Adam automatically (same name); dropout and label smoothing are
    read from ``self.hparams`` when they change."""

    def setup(self, hparams):
        torch.set_num_threads(1)  # a small model: threads only add overhead
        self.data = load_data()
        self.model = Seq2Seq(len(self.data["src_vocab"].words), len(self.data["tgt_vocab"].words),
                             hparams["dropout"]).to(self.device)
        self.optimizer = torch.optim.Adam(self.model.parameters(), lr=hparams["lr"],
                                          betas=(0.9, 0.98))

    def train(self, steps):
        src, tgt, _ = self.data["train"]
        self.model.train()
        self.model.set_dropout(self.hparams["dropout"])
        loss_fn = nn.CrossEntropyLoss(ignore_index=PAD,
                                      label_smoothing=self.hparams["label_smoothing"])
        for _ in range(steps):
            idx = torch.randint(len(src), (BATCH,))
            s, t = src[idx].to(self.device), tgt[idx].to(self.device)
            logits = self.model(s, t[:, :-1])
            loss = loss_fn(logits.reshape(-1, logits.shape[-1]), t[:, 1:].reshape(-1))
            self.optimizer.zero_grad(set_to_none=True)
            loss.backward()
            nn.utils.clip_grad_norm_(self.model.parameters(), 1.0)
            self.optimizer.step()
        return loss.item()

    def bleu(self, split: str) -> float:
        """Corpus BLEU (sacrebleu, 0–100) of greedy translations of a split."""
        src, tgt, refs = self.data[split]
        self.model.eval()
        hyps = []
        for i in range(0, len(src), 500):
            out = self.model.greedy(src[i:i + 500].to(self.device), tgt.shape[1] + 2)
            hyps += [self.data["tgt_vocab"].decode(row.tolist()) for row in out.cpu()]
        return sacrebleu.corpus_bleu(hyps, [refs]).score

    def evaluate(self):
        return self.bleu("val")


def test_bleu(result: pbt.Result) -> float:
    """Test BLEU of the best member's final weights."""
    return result.member().bleu("test")


def main(argv=None):
    p = argparse.ArgumentParser(description="PBT of a small Transformer on generated translation")
    p.add_argument("--population", type=int, default=8)
    p.add_argument("--steps", type=int, default=1200, help="steps (batches) per member")
    p.add_argument("--ready-every", type=int, default=100)
    p.add_argument("--workers", type=int, default=None, help="default: number of cores")
    p.add_argument("--seed", type=int, default=0)
    p.add_argument("--run-dir", default=None, help="default: runs/translationmember-<time>")
    p.add_argument("--quiet", action="store_true")
    a = p.parse_args(argv)
    result = pbt.run(
        TranslationMember, SPACE, population=a.population, steps=a.steps,
        ready_every=a.ready_every, exploit=pbt.Truncation(0.25), explore=pbt.Perturb(),
        workers=a.workers, seed=a.seed, run_dir=a.run_dir, progress=not a.quiet,
        summary=not a.quiet,
    )
    h = result.best_hparams
    print(f"best member {result.best_member_id}: validation BLEU {result.best_score:.1f}, "
          f"test BLEU {test_bleu(result):.1f}; lr {h['lr']:.2e}, dropout {h['dropout']:.2f}, "
          f"label smoothing {h['label_smoothing']:.2f}")
    print(f"results are in {result.run_dir.resolve()}  (torchpbt status {result.run_dir})")
    return result


if __name__ == "__main__":
    main()
