"""Evaluation without models: retrieval and answer metrics, and readers for evaluation sets."""

from rag.evaluate.datasets import (BeirDataset, EvalDocument, EvalQuestion, SquadDataset, read_beir, read_qa_jsonl,
                                   read_squad, sample)
from rag.evaluate.metrics import (cites_source, contains_reference, exact_match, f1_score, is_chinese, mrr_at_k,
                                  ndcg_at_k, percentile, recall_at_k, retrieval_report)

__all__ = ["BeirDataset", "EvalDocument", "EvalQuestion", "SquadDataset", "cites_source", "contains_reference",
           "exact_match", "f1_score", "is_chinese", "mrr_at_k", "ndcg_at_k", "percentile", "read_beir",
           "read_qa_jsonl", "read_squad", "recall_at_k", "retrieval_report", "sample"]
