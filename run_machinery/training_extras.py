"""What the project adds to the article's train() and test(), travelling as one object."""
from dataclasses import dataclass

from margin_heads import Head

from .triplet_loss import TripletTerm


@dataclass(frozen=True)
class TrainingExtras:
    """The project's additions to the article's epoch: the classifier `head` on the feature
    (margin_heads.Head; "softmax", ip2 as it is, is the article's), the weights of the loss
    parts (`loss_weight` the Center Loss's, as the article's; `softmax_weight` the head's
    loss's, 1 in the article), the batch-hard `triplet` term (a TripletTerm; of weight 0:
    none, the article's), bfloat16 autocast (`amp`), and the `stop` request a training epoch
    checks after each step (run_machinery.stop_signals; None: never)."""
    head: Head
    loss_weight: float = 1.0
    softmax_weight: float = 1.0
    triplet: TripletTerm = TripletTerm(0.0)
    amp: bool = False
    stop: object = None

    @classmethod
    def from_settings(cls, args, head, stop):
        """Those of the trainer's settings `args`, with its `head` and `stop` request."""
        return cls(head, args.loss_weight, args.softmax_weight,
                   TripletTerm(args.triplet_weight, args.triplet_margin), args.amp, stop)
