"""Evaluation of TPP models: log-likelihood in both conventions, next-event RMSE and accuracy."""

from tpp.evaluation.metrics import evaluate_model, next_event_predictions

__all__ = ["evaluate_model", "next_event_predictions"]
