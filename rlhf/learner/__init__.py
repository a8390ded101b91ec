"""The learner arrow: TrainBatch -> Update (optimiser steps on the adapter, and the critic)."""
