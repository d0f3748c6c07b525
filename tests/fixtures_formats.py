"""Hand-written rows in each upstream dataset's exact schema, shared by the loader tests (written to tmp files there).

Texts are short but keep each source's quirks: GSM8K ``<<...>>`` calculator annotations and ``#### N``; MATH nested
``\\boxed{\\frac{1}{2}}``; PRM800K nested question/label objects with null ratings and a phase-2 error step that no
completion is chosen for; Math-Shepherd's ``ки`` tags; ProcessBench's first-error ``label``.
"""

GSM8K_ROWS = [
    {
        "question": "Natalia sold clips to 48 of her friends in April, and then she sold half as many clips to her "
        "friends in May. How many clips did Natalia sell altogether in April and May?",
        "answer": "Natalia sold 48/2 = <<48/2=24>>24 clips in May.\n"
        "Natalia sold 48+24 = <<48+24=72>>72 clips altogether in April and May.\n#### 72",
    },
    {
        "question": "A shop sells 1,200 pens a day. How many pens does it sell in 2 days?",
        "answer": "It sells 1,200 * 2 = <<1200*2=2400>>2,400 pens.\n#### 2,400",
    },
]

MATH_ROWS = [  # hendrycks MATH: no 'answer' key, the answer is the last \boxed{}
    {
        "problem": "Simplify $\\frac{2}{4}$.",
        "level": "Level 1",
        "type": "Prealgebra",
        "solution": "Divide the numerator and the denominator by $2$.\n\nSo $\\frac{2}{4} = \\boxed{\\frac{1}{2}}$.",
    },
]

MATH500_ROWS = [  # HuggingFaceH4/MATH-500: 'answer', 'subject', integer 'level', 'unique_id'
    {
        "problem": "Convert the point $(0,3)$ in rectangular coordinates to polar coordinates.",
        "solution": "We have that $r = \\sqrt{0^2 + 3^2} = 3.$\n\n"
        "Therefore, the polar coordinates are $\\boxed{\\left( 3, \\frac{\\pi}{2} \\right)}.$",
        "answer": "\\left( 3, \\frac{\\pi}{2} \\right)",
        "subject": "Precalculus",
        "level": 2,
        "unique_id": "test/precalculus/807.json",
    },
]


def _prm800k_completion(text, rating, flagged=False):
    return {"text": text, "rating": rating, "flagged": flagged}


PRM800K_PHASE2_ROW = {  # phase 2: pre-generated solution, labelling stops at the first -1 (chosen_completion null)
    "labeler": "340d89bc-f5b7-45e9-b272-909ba68ee363",
    "timestamp": "2023-01-22T04:34:27.052924",
    "generation": 9,
    "is_quality_control_question": False,
    "is_initial_screening_question": False,
    "question": {
        "problem": "What is $2 + 3 \\cdot 4$?",
        "ground_truth_solution": "$2 + 3 \\cdot 4 = 2 + 12 = \\boxed{14}$.",
        "ground_truth_answer": "14",
        "pre_generated_steps": ["I multiply first.", "$3 \\cdot 4 = 12$.", "$2 + 12 = 15$.", "# Answer\n\n15"],
        "pre_generated_answer": "15",
        "pre_generated_verifier_score": 0.0014547815390413694,
    },
    "label": {
        "steps": [
            {
                "completions": [_prm800k_completion("I multiply first.", 0, None)],
                "human_completion": None,
                "chosen_completion": 0,
            },
            {
                "completions": [_prm800k_completion("$3 \\cdot 4 = 12$.", 1)],
                "human_completion": None,
                "chosen_completion": 0,
            },
            {
                "completions": [_prm800k_completion("$2 + 12 = 15$.", -1)],
                "human_completion": None,
                "chosen_completion": None,
            },
        ],
        "total_time": 278270,
        "finish_reason": "found_error",
    },
}

PRM800K_PHASE1_ROW = {  # phase 1: alternatives per step; all rated -1 at step 2, so the labeler wrote their own
    "labeler": "e90a38f3-3135-4465-87af-3e6322e3d772",
    "timestamp": "2022-07-17T16:56:51.323252",
    "generation": None,
    "is_quality_control_question": False,
    "is_initial_screening_question": False,
    "question": {
        "problem": "How many positive divisors does $6$ have?",
        "ground_truth_answer": "4",
    },
    "label": {
        "steps": [
            {
                "completions": [_prm800k_completion("The divisors of $6$ are $1, 2, 3, 6$.", 1)],
                "human_completion": None,
                "chosen_completion": 0,
            },
            {
                "completions": [
                    _prm800k_completion("So there are $3$ divisors.", -1),
                    _prm800k_completion("So there are $5$ divisors.", -1),
                ],
                "human_completion": {
                    "text": "That is $4$ divisors.",
                    "rating": None,
                    "source": "human",
                    "flagged": False,
                    "corrected_rating": None,
                },
                "chosen_completion": None,
            },
            {
                "completions": [
                    _prm800k_completion("Let me double-check by listing pairs.", 0),
                    _prm800k_completion("# Answer\n\n4", 1),
                ],
                "human_completion": None,
                "chosen_completion": 1,
            },
        ],
        "total_time": 81000,
        "finish_reason": "solution",
    },
}

PRM800K_BAD_PROBLEM_ROW = {
    "labeler": "340d89bc-f5b7-45e9-b272-909ba68ee363",
    "timestamp": "2023-01-23T01:00:00.000000",
    "generation": 3,
    "is_quality_control_question": False,
    "is_initial_screening_question": False,
    "question": {"problem": "Find $x$.", "ground_truth_answer": "2"},
    "label": {"steps": [], "total_time": 1000, "finish_reason": "bad_problem"},
}

MATH_SHEPHERD_ROWS = [
    {
        "input": "Janet has 16 eggs. She eats 3 and sells the rest at $2 each. How much does she make? "
        "Step 1: She sells 16 - 3 = <<16-3=13>>13 eggs. ки\n"
        "Step 2: She makes 13 * 2 = <<13*2=26>>26 dollars. The answer is: 26 ки",
        "label": "Janet has 16 eggs. She eats 3 and sells the rest at $2 each. How much does she make? "
        "Step 1: She sells 16 - 3 = <<16-3=13>>13 eggs. +\n"
        "Step 2: She makes 13 * 2 = <<13*2=26>>26 dollars. The answer is: 26 +",
        "task": "GSM8K",
    },
    {
        "input": "What is $3^2 + 4$? Step 1: $3^2 = 6$. ки\nStep 2: $6 + 4 = 10$. ки\nStep 3: The answer is: 10 ки",
        "label": "What is $3^2 + 4$? Step 1: $3^2 = 6$. -\nStep 2: $6 + 4 = 10$. -\nStep 3: The answer is: 10 -",
        "task": "MATH",
    },
]

PROCESSBENCH_ROWS = [
    {
        "id": "gsm8k-0",
        "generator": "Qwen2-7B-Instruct",
        "problem": "Tom has 3 boxes of 4 apples and eats 2. How many apples are left?",
        "steps": ["Tom has 3 * 4 = 12 apples.", "He eats 2, so 12 + 2 = 14 are left.", "The answer is \\boxed{14}."],
        "final_answer_correct": False,
        "label": 1,
    },
    {
        "id": "gsm8k-1",
        "generator": "Llama-3.1-8B-Instruct",
        "problem": "What is 10 - 4?",
        "steps": ["10 - 4 = 6.", "The answer is \\boxed{6}."],
        "final_answer_correct": True,
        "label": -1,
    },
]

TRL_STEPWISE_ROWS = [
    {"prompt": "What is 2 + 2?", "completions": ["2 + 2 = 4.", "The answer is 4."], "labels": [True, True]},
    {"prompt": "What is 3 * 3?", "completions": ["3 * 3 = 6.", "The answer is 6."], "labels": [0.25, 0.0]},
]
