import argparse

from margin_heads import Head

from run_machinery.training_extras import TrainingExtras
from run_machinery.triplet_loss import TripletTerm


def test_by_default_the_articles_epoch():
    extras = TrainingExtras(Head("softmax"))
    assert (extras.loss_weight, extras.softmax_weight, extras.amp, extras.stop) == (1.0, 1.0,
                                                                                   False, None)
    assert not extras.triplet  # of weight 0: no triplet loss computed


def test_from_the_trainers_settings():
    args = argparse.Namespace(loss_weight=0.5, softmax_weight=0.0, triplet_weight=2.0,
                              triplet_margin=0.0, amp=True)
    head, stop = Head("softmax"), object()
    extras = TrainingExtras.from_settings(args, head, stop)
    assert extras == TrainingExtras(head, 0.5, 0.0, TripletTerm(2.0, 0.0), True, stop)
    assert extras.triplet
