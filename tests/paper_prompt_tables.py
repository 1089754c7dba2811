"""An independent transcription of the Deita paper's prompt tables (Liu et al., ICLR 2024, arXiv 2312.15685,
Appendix E), kept apart from the package so that a test can compare the package's prompts with the paper.

Transcribed as the tables print them: `<...>` are the tables' placeholders; Table 14 prints its format example
with the escape sequences of the authors' prompt string (`\\n` then a space), kept here as written (the test
reads them as newlines); Tables 16-17 print an example instruction where the placeholder goes. Tables 12-13
show two operations each, joined by "or"; each operation line stands alone here.
"""

# Tables 12-13: Evol Complexity (in-depth evolving), one method line per operation.
TABLE_12_13 = """I want you act as a Prompt Rewriter.
Your objective is to rewrite a given prompt into a more complex version to make those famous AI systems (e.g., ChatGPT and GPT4) a bit harder to handle.
But the rewritten prompt must be reasonable and must be understood and responded by humans.
Your rewriting cannot omit the non-text parts such as the table and code in #Given Prompt#:. Also, please do not omit the input in #Given Prompt#.
You SHOULD complicate the given prompt using the following method:
<method>
You should try your best not to make the #Rewritten Prompt# become verbose, #Rewritten Prompt# can only add 10 to 20 words into #Given Prompt#.
'#Given Prompt#', '#Rewritten Prompt#', 'given prompt' and 'rewritten prompt' are not allowed to appear in #Rewritten Prompt#
#Given Prompt#:
<Here is instruction>
#Rewritten Prompt#:
"""
TABLE_12_13_METHODS = {
    "constraints": "Please add one more constraints/requirements into #Given Prompt#",                      # Table 12
    "deepen": "If #Given Prompt# contains inquiries about certain issues, the depth and breadth of the inquiry "
              "can be increased.",                                                                            # Table 12
    "concretizing": "Please replace general concepts with more specific concepts.",                          # Table 13
    "reasoning": "If #Given Prompt# can be solved with just a few simple thinking processes, you can rewrite it "
                 "to explicitly request multiple-step reasoning.",                                            # Table 13
}

# Table 14: rank and score instructions of different complexities.
TABLE_14 = r"""Ranking the following questions according to the difficulty and complexity. Score 1-5.
You can give a score of 6 if the question is too complex for you to answer it. You should respond with the format:\n [1] Score: 1\n [2] Score: 2\n
[1] <Instruction 1>
[2] <Instruction 2>
[3] <Instruction 3>
[4] <Instruction 4>
[5] <Instruction 5>
"""

# Tables 16-17: Evol Quality, with the table's own example instruction.
TABLE_16_17 = """I want you to act as a Response Rewriter
Your goal is to enhance the quality of the response given by an AI assistant to the #Given Prompt# through rewriting.
But the rewritten response must be reasonable and must be understood by humans.
Your rewriting cannot omit the non-text parts such as the table and code in #Given Prompt# and #Given Response#. Also, please do not omit the input in #Given Prompt#.
You Should enhance the quality of the response using the following method:
<method>
You should try your best not to make the #Rewritten Response# become verbose, #Rewritten Response# can only add 10 to 20 words into #Given Response#.
'#Given Response#', '#Rewritten Response#', 'given response' and 'rewritten response' are not allowed to appear in #Rewritten Response#
#Given Prompt#:
Give three tips for staying healthy.
#Given Response#:
<Response>
#Rewritten Response#:
"""
TABLE_16_17_METHODS = {
    "helpfulness": "Please make the Response more helpful to the user.",        # Table 16
    "relevance": "Please make the Response more relevant to #Given Prompt#.",   # Table 16
    "depth": "Please make the Response more in-depth.",                         # Table 17
    "creativity": "Please increase the creativity of the response.",            # Table 17
    "details": "Please increase the detail level of Response.",                 # Table 17
}

# Table 18: rank and score responses of different qualities.
TABLE_18 = """Rank the following responses provided by different AI assistants to the user's question according to the quality of their response. Score each response from 1 to 5, with 6 reserved for responses that are already very well written and cannot be improved further.
Your evaluation should consider factors such as helpfulness, relevance, accuracy, depth, creativity, and level of detail of the response.
Use the following format:
[Response 1] Score:
[Response 2] Score:
#Question#: <Instruction>
#Response List#:
[Response 1] <Response 1>
[Response 2] <Response 2>
[Response 3] <Response 3>
[Response 4] <Response 4>
[Response 5] <Response 5>
"""
