"""DVC stage 'classifier': see ebm.pipeline.classifier."""

from ebm.entry import main
from ebm.pipeline import ClassifierPaths, classifier

if __name__ == "__main__":
    main(classifier, ClassifierPaths)
