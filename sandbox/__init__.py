"""The simulated support platform (fakes speaking the real APIs over HTTP on 127.0.0.1).

Never imported by flows/, tasks/ or blocks/: production code talks to it only over the network.
"""
