"""Every prompt a conversion writes, and the wording of the synthetic stand-ins: one module.

The task forms of the official releases: the Cauldron's question wording and answer form.
``HuggingFaceM4/the_cauldron`` built its ``docvqa``, ``hateful_memes`` and ``nlvr2`` texts with
huggingface/smollm ``vision/data/datasets_processing_scripts/build_concatenation_datasets_sft/build_ds_sft.py``
(Apache-2.0; the template strings below are that script's, unchanged):

* docvqa (``map_transform_docvqa``): the question, its first letter capitalised, plus one of
  ``QUESTION_BRIEVETY_HINT``; the answer capitalised the same way and ended with ``.``.
* hateful_memes (``map_transform_hm``): one of ``prompts_hm`` plus ``"\\nAnswer yes or no."``; the
  meme's own text is not in the prompt (it is in the pixels); answer ``Yes.`` (label 1) / ``No.``.
* nlvr2 (``map_transform_nlvr2``): ``prefix``, one of ``prompts_nlvr2`` around the sentence, then
  ``suffix``; answer ``Yes.`` (label True) / ``No.``.

The script draws a template with an unseeded ``random.choice`` per example; here the draw is a
hash of the example's own key in the release (question id, image path, identifier), so a
conversion is the same on every run, machine and process count, and the templates are used about
equally often, as in the Cauldron. The official converters import these.

The recipe's own prompts: DocVQA from ``nielsr/docvqa_1200_examples`` (``nielsr_docvqa.py``), the
question plus ``"\nAnswer briefly."`` (the recipe's evaluation and mini-training prompt); UCF-101
(``ucf101.py``, the subset and the official release), ``"Classify the video into one of the
following classes: "`` plus the sorted class names and ``"."``.

The synthetic stand-ins' wording (``synthetic.py`` writes it into its raw Cauldron rows, which the
Cauldron converter copies): their own, shared with none of the forms above, so that their bytes
never change.
"""

from __future__ import annotations

import hashlib
from collections.abc import Sequence

YES, NO = "Yes.", "No."

DOCVQA_BREVITY_HINTS = (
    "\nMake the answer very short.",
    "\nGive a very brief answer.",
    "\nYour answer should be very brief.",
    "\nOffer a terse response.",
    "\nProvide a succinct answer.",
    "\nKeep it short and to the point.",
    "\nEnsure brevity in your answer. ",
    "\nOffer a very short reply.",
    "\nYour response must be concise.",
    "\nYour answer should be compact.",
    "\nProvide a short and direct response.",
)

HATEFUL_MEMES_QUESTIONS = (
    "Is the sentiment of this meme offensive?",
    "Does this meme promote hate speech?",
    "Can this meme be considered disrespectful?",
    "Does this meme carry a negative message?",
    "Is this meme spreading toxicity?",
    "Can this meme be harmful to a community?",
    "Is the humor in this meme in bad taste?",
    "Is the message of this meme aggressive?",
    "Does this meme support discrimination?",
    "Is the language used in this meme hateful?",
    "Can this meme be interpreted as derogatory?",
)
HATEFUL_MEMES_SUFFIX = "\nAnswer yes or no."

NLVR2_PREFIX = "The first image is the image on the left, the second image is the image on the right."
NLVR2_STATEMENTS = (
    'Evaluate the accuracy of this statement regarding the images: "{caption}". Is it true?',
    'Given the left and right images, does the statement "{caption}" hold true?',
    'Assess this claim about the two images: "{caption}". Correct or not?',
    'For the images shown, is this caption "{caption}" true?',
    'Considering the images on both sides, is "{caption}" valid?',
    'Analyze the images presented: Is the assertion "{caption}" valid?',
    'For the images displayed, is the sentence "{caption}" factually correct?',
    'Examine the images to the left and right. Is the description "{caption}" accurate?',
)
NLVR2_SUFFIX = "Answer yes or no."


def pick(templates: Sequence[str], key: str) -> str:
    """The template for the example with release key ``key`` (a stand-in for the script's draw)."""
    digest = hashlib.sha256(key.encode("utf-8")).digest()
    return templates[int.from_bytes(digest[:8], "big") % len(templates)]


def cauldron_casing(text: str, is_question: bool = False) -> str:
    """The script's ``correct_casing``: a text starting lowercase is ``str.capitalize``d (which
    lowercases the rest too); a non-question gets a final ``.`` unless it has one."""
    if text and text[0].islower():
        text = text.capitalize()
    if not is_question and not text.endswith("."):
        text += "."
    return text


def yes_no(value: bool) -> str:
    return YES if value else NO


def docvqa_prompt(question: str, question_id: str) -> str:
    return cauldron_casing(question, is_question=True) + pick(DOCVQA_BREVITY_HINTS, question_id)


def docvqa_answer(answer: str) -> str:
    return cauldron_casing(answer)


def hateful_memes_prompt(image: str) -> str:
    return pick(HATEFUL_MEMES_QUESTIONS, image) + HATEFUL_MEMES_SUFFIX


def nlvr2_prompt(sentence: str, identifier: str) -> str:
    return f"{NLVR2_PREFIX} {pick(NLVR2_STATEMENTS, identifier).format(caption=sentence)} {NLVR2_SUFFIX}"


# ---------------------------------------------------------------------------------------------
# the recipe's prompts

DOCVQA_RECIPE_SUFFIX = "\nAnswer briefly."
UCF101_PREFIX = "Classify the video into one of the following classes: "


def docvqa_recipe_prompt(question: str) -> str:
    return question + DOCVQA_RECIPE_SUFFIX


def ucf101_prompt(classes: list[str]) -> str:
    return UCF101_PREFIX + ", ".join(classes) + "."


# ---------------------------------------------------------------------------------------------
# the synthetic stand-ins

DOCVQA_QUESTIONS = (
    "What is the colour of the block on this page?",
    "Which colour is the large block on this page?",
    "What colour is the big block shown on this page?",
)
HATEFUL_QUESTION = "Is this meme hateful? Answer yes or no."
NLVR2_STATEMENT = "At least one of the two images shows a red square.\nTrue or False?"
NLVR2_FOLLOWUP = "Is there a red square in either image? Answer yes or no."
